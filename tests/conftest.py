"""Settings of the whole test session."""
import torch

# One intra-op thread in the test process, for every test, alone or in the
# whole suite. Float results of the convolutions change with the thread
# count (other reduction orders), and the tolerances of the float
# comparisons hold with one thread: the suite ran with one from
# test_ddp_equivalence on (its set_num_threads(1) stayed), and two tests
# after it failed when run alone with torch's default of two threads
# (test_onnx_evaluation: mAP 0.379 vs 0.382 > 0.002; the channels_last
# first step: gradient 1.8e-2 > 1e-2). On a two-core machine that runs
# other jobs too, two OpenMP threads per process also wait on each other:
# a yolov7-tiny training step at 160 px took 2.6-3.0 s with two threads
# against 0.3-0.5 s with one, measured at load 5. The subprocesses of the
# tests run with OMP_NUM_THREADS=1 (or set one thread) themselves.
torch.set_num_threads(1)
