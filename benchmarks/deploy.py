"""Batch-1 CPU latency of the deployment variants of the YOLOv7 models.

Per model, in one run on the same input: PyTorch eager unfused (the training
graph in eval mode), re-parameterized (:func:`mmyolo_ext.deploy.
reparameterize`), re-parameterized + channels_last, and, where onnxruntime
is installed and the exporter (``mmyolo_ext/deploy/onnx_export.py``) is
present, the exported raw model in onnxruntime on the CPU. The variants run
interleaved (so other load on the machine affects all alike); the table
gives the median wall-clock time and the ratio to the unfused model, and the
largest difference of each PyTorch variant's raw outputs from the unfused
model's, relative to their largest value (all compute the same function;
the exporter's tests check onnxruntime's outputs). Figures are printed, never
asserted.

Usage::

    python benchmarks/deploy.py                       # demo 320, tiny, L
    python benchmarks/deploy.py --models tiny --repeats 10 --threads 2
"""
import argparse
import copy
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn


from mmyolo_ext.deploy import load_detector, reparameterize
from mmyolo_ext.utils import config_path

# model name -> (how it is built, input size)
MODELS = {
    'demo': ('yolov7_tiny_demo.py', 320),
    'tiny': ('tiny', 640),
    'l': ('l', 640),
}


def build(name: str) -> nn.Module:
    """The model with PyTorch's default initialization (timing does not
    depend on the values); the demo model from its config (3 classes)."""
    source = MODELS[name][0]
    if not source.endswith('.py'):
        source = f'_base_/models/yolov7_{source}.py'
    return load_detector(config_path(source), None)


def onnx_runner(model: nn.Module, inputs: torch.Tensor,
                threads: int) -> Tuple[Callable, str]:
    """An onnxruntime CPU session of the exported raw model, or None and
    why not."""
    if importlib.util.find_spec('onnxruntime') is None:
        return None, 'onnxruntime is not installed'
    if importlib.util.find_spec('mmyolo_ext.deploy.onnx_export') is None:
        return None, 'mmyolo_ext/deploy/onnx_export.py is not there'
    import onnxruntime as ort
    from mmyolo_ext.deploy import onnx_export
    path = Path(tempfile.mkdtemp()) / 'model.onnx'
    onnx_export.export_onnx(model, str(path),
                            img_size=tuple(inputs.shape[-2:]), nms='none')
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(path), options, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    array = inputs.numpy()
    return (lambda: session.run(None, {name: array})), ''


def raw_outputs(model: nn.Module, inputs: torch.Tensor) -> List[torch.Tensor]:
    with torch.no_grad():
        return [t.contiguous() for t in model(inputs, mode='tensor')]


def timed(variants: Dict[str, Callable], warmup: int,
          repeats: int) -> Dict[str, List[float]]:
    times = {name: [] for name in variants}
    with torch.no_grad():
        for i in range(warmup + repeats):
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
    return times


def benchmark(name: str, threads: int, warmup: int, repeats: int,
              onnx: bool) -> None:
    size = MODELS[name][1]
    unfused = build(name).eval()
    fused = reparameterize(copy.deepcopy(unfused))
    fused_cl = copy.deepcopy(fused).to(memory_format=torch.channels_last)
    inputs = torch.rand(1, 3, size, size,
                        generator=torch.Generator().manual_seed(0))
    inputs_cl = inputs.contiguous(memory_format=torch.channels_last)
    variants = {
        'eager unfused': lambda: unfused(inputs, mode='tensor'),
        're-parameterized': lambda: fused(inputs, mode='tensor'),
        're-param + channels_last':
        lambda: fused_cl(inputs_cl, mode='tensor'),
    }
    reference = raw_outputs(unfused, inputs)
    diffs = {
        're-parameterized': raw_outputs(fused, inputs),
        're-param + channels_last': raw_outputs(fused_cl, inputs_cl),
    }
    note = ''
    if onnx:
        run, note = onnx_runner(fused, inputs, threads)
        if run is not None:
            variants['onnxruntime CPU'] = run
            diffs['onnxruntime CPU'] = None
    times = timed(variants, warmup, repeats)
    base = statistics.median(times['eager unfused'])
    print(f'\n{name} ({size}x{size}, batch 1, {threads} thread(s), median '
          f'of {repeats} interleaved runs after {warmup} warm-up)')
    print(f'  {"variant":<26} {"ms":>9} {"speed-up":>9}  '
          'max |raw - unfused| / max |unfused|')
    scale = max(t.abs().max().item() for t in reference)
    for variant, values in times.items():
        median = statistics.median(values)
        outs = diffs.get(variant)
        diff = '' if outs is None else '{:.1e}'.format(
            max((a - b).abs().max().item()
                for a, b in zip(outs, reference)) / scale)
        print(f'  {variant:<26} {median * 1e3:9.1f} {base / median:8.2f}x  '
              f'{diff}')
    if note:
        print(f'  (onnxruntime column left out: {note})')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', default='demo,tiny,l',
                        help=f'comma-separated, from {sorted(MODELS)}')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch (and onnxruntime) CPU threads')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--no-onnx', action='store_true',
                        help='leave out the onnxruntime column')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models.split(','):
        if name not in MODELS:
            parser.error(f'unknown model {name!r}; choose from '
                         f'{sorted(MODELS)}')
    print(f'torch {torch.__version__}, {torch.get_num_threads()} thread(s)')
    for name in args.models.split(','):
        benchmark(name, args.threads, args.warmup, args.repeats,
                  not args.no_onnx)


if __name__ == '__main__':
    main()
