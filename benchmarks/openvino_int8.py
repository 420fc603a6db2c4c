"""OpenVINO FP32 / INT8 against onnxruntime FP32: batch-1 CPU latency, and
the bbox mAP of a trained model.

Latency, per model (yolov7-tiny and yolov7 (L) at 640 by default; seeded
weights: the time does not depend on the values), in one run on the same
input, interleaved rounds, median: PyTorch eager (unfused), re-parameterized
+ channels_last, onnxruntime FP32 (the ``--nms none`` export), OpenVINO FP32
IR and OpenVINO INT8 IR (NNCF, calibrated here on letterboxed random images:
the latency does not depend on the calibration). Ratios are to onnxruntime
FP32. Every runtime gets ``--threads`` intra-op threads.

mAP (``--config CONFIG --checkpoint CKPT``): the checkpoint in PyTorch, its
onnxruntime FP32 export, the OpenVINO FP32 IR and the INT8 IR calibrated on
``--calib-images`` of the config's training images through the test
letterbox (``tools/deployment/export_openvino.py --int8``), each evaluated
by ``tools/test.py`` on the config's test set.

Usage::

    python benchmarks/openvino_int8.py --models tiny,l --threads 2 --repeats 10
    python benchmarks/openvino_int8.py --models none \
        --config configs/yolov7_tiny_demo.py --checkpoint epoch_12.pth
"""
import argparse
import copy
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mmyolo_ext.deploy import load_detector, reparameterize
from mmyolo_ext.deploy.onnx_export import export_onnx
from mmyolo_ext.deploy.openvino_export import export_openvino
from mmyolo_ext.utils import config_path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {'tiny': 'yolov7_tiny.py', 'l': 'yolov7_l.py'}


def latency(name: str, size: int, threads: int, warmup: int, repeats: int,
            calib: int) -> None:
    import onnxruntime as ort
    import openvino as ov
    unfused = load_detector(config_path(f'_base_/models/{MODELS[name]}'),
                            None).eval()
    fused_cl = reparameterize(copy.deepcopy(unfused)).to(
        memory_format=torch.channels_last)
    inputs = torch.rand(1, 3, size, size,
                        generator=torch.Generator().manual_seed(0))
    inputs_cl = inputs.contiguous(memory_format=torch.channels_last)
    array = inputs.numpy()
    tmp = Path(tempfile.mkdtemp())
    export_onnx(copy.deepcopy(unfused), str(tmp / 'm.onnx'), (size, size))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(tmp / 'm.onnx'), options,
                                   providers=['CPUExecutionProvider'])
    rng = np.random.default_rng(0)
    calibration = [rng.random((3, size, size), dtype=np.float32)
                   for _ in range(calib)]
    export_openvino(copy.deepcopy(unfused), str(tmp / 'fp32.xml'),
                    (size, size))
    export_openvino(copy.deepcopy(unfused), str(tmp / 'int8.xml'),
                    (size, size), 'int8', calibration)
    core = ov.Core()
    compiled = {
        p: core.compile_model(
            core.read_model(str(tmp / f'{p}.xml')), 'CPU', {
                'INFERENCE_NUM_THREADS': threads,
                'PERFORMANCE_HINT': 'LATENCY'
            })
        for p in ('fp32', 'int8')
    }
    variants = {
        'PyTorch eager': lambda: unfused(inputs, mode='tensor'),
        're-param + channels_last': lambda: fused_cl(inputs_cl,
                                                     mode='tensor'),
        'onnxruntime fp32': lambda: session.run(None, {'images': array}),
        'OpenVINO fp32': lambda: compiled['fp32'](array),
        'OpenVINO INT8': lambda: compiled['int8'](array),
    }
    times = {k: [] for k in variants}
    with torch.no_grad():
        for i in range(warmup + repeats):
            for k, run in variants.items():
                # onnxruntime's pool spins on the cores for a while after a
                # run; a pause keeps that off the next variant's time
                time.sleep(0.2)
                start = time.perf_counter()
                run()
                if i >= warmup:
                    times[k].append(time.perf_counter() - start)
    base = statistics.median(times['onnxruntime fp32'])
    print(f'\nyolov7-{name} {size}x{size}, batch 1, {threads} thread(s) '
          f'each, median of {repeats} interleaved rounds after {warmup} '
          f'warm-up, load {os.getloadavg()[0]:.1f}')
    print(f'  {"variant":<26} {"ms":>9} {"x onnxruntime fp32":>19}')
    for k, values in times.items():
        median = statistics.median(values)
        print(f'  {k:<26} {median * 1e3:9.1f} {median / base:18.2f}x')


def evaluate(config: str, weights: str, threads: int) -> float:
    """bbox mAP of ``tools/test.py CONFIG WEIGHTS``."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as work:
        out = subprocess.run(
            [sys.executable, str(ROOT / 'tools' / 'test.py'), config, weights,
             '--work-dir', work],
            capture_output=True, text=True, env=env, cwd=ROOT)
    found = re.findall(r'coco/bbox_mAP: ([0-9.]+)', out.stdout + out.stderr)
    if out.returncode or not found:
        raise RuntimeError(f'tools/test.py {weights} failed:\n'
                           f'{out.stderr[-3000:]}')
    return float(found[-1])


def accuracy(config: str, checkpoint: str, threads: int,
             calib_images: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    export = [sys.executable, str(ROOT / 'tools' / 'deployment')]
    run = dict(check=True, cwd=ROOT, capture_output=True)
    subprocess.run([*export[:1], export[1] + '/export_onnx.py', config,
                    checkpoint, '--out', str(tmp / 'm.onnx'), '--dynamic',
                    'all'], **run)
    subprocess.run([*export[:1], export[1] + '/export_openvino.py', config,
                    checkpoint, '--out', str(tmp / 'fp32.xml')], **run)
    start = time.perf_counter()
    subprocess.run([*export[:1], export[1] + '/export_openvino.py', config,
                    checkpoint, '--out', str(tmp / 'int8.xml'), '--int8',
                    '--calib-images', str(calib_images)], **run)
    quantize_s = time.perf_counter() - start
    maps = {
        'PyTorch': evaluate(config, checkpoint, threads),
        'onnxruntime fp32': evaluate(config, str(tmp / 'm.onnx'), threads),
        'OpenVINO fp32': evaluate(config, str(tmp / 'fp32.xml'), threads),
        'OpenVINO INT8': evaluate(config, str(tmp / 'int8.xml'), threads),
    }
    print(f'\nbbox mAP, {config} {checkpoint} (tools/test.py); INT8 '
          f'calibrated on {calib_images} training images in '
          f'{quantize_s:.0f} s (export included)')
    for k, value in maps.items():
        print(f'  {k:<26} {value:.3f} ({value - maps["OpenVINO fp32"]:+.3f} '
              'vs OpenVINO fp32)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', default='tiny,l',
                        help=f'comma-separated from {sorted(MODELS)}, or none')
    parser.add_argument('--size', type=int, default=640)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--latency-calib', type=int, default=8,
                        help='random images calibrating the latency INT8')
    parser.add_argument('--config', help='config of --checkpoint (mAP)')
    parser.add_argument('--checkpoint', help='trained checkpoint (mAP)')
    parser.add_argument('--calib-images', type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from importlib.metadata import version
    import onnxruntime
    print(f'torch {torch.__version__}, onnxruntime {onnxruntime.__version__},'
          f' openvino {version("openvino")}; {args.threads} thread(s) for '
          'each runtime')
    for name in args.models.split(','):
        if name != 'none':
            latency(name, args.size, args.threads, args.warmup, args.repeats,
                    args.latency_calib)
    if args.checkpoint:
        accuracy(args.config, args.checkpoint, args.threads,
                 args.calib_images)


if __name__ == '__main__':
    main()
