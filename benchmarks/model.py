"""Parameters, GFLOPs and CPU forward time of the YOLOv7 models.

Prints, per model, our parameter counts (training model and after
:func:`mmyolo_ext.deploy.reparameterize`) and GFLOPs at the official input
size next to the official figures, then the batch-1 forward time on the CPU
of the unfused and the re-parameterized model. Figures are printed, never
asserted.

Usage::

    python benchmarks/model.py                      # all, time tiny + l
    python benchmarks/model.py --archs tiny --time-archs tiny --repeats 5
"""
import argparse
import copy
import time
from pathlib import Path
from typing import Dict, List, Sequence

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope

REPO_ROOT = Path(__file__).resolve().parents[1]

import mmyolo_ext  # noqa: F401  (registers the modules)
from mmyolo_ext.deploy import reparameterize

ARCHS = ('tiny', 'l', 'x', 'w6', 'e6', 'd6', 'e6e')
# official figures (WongKinYiu/yolov7 README table and its cfg/training and
# cfg/deploy models): name, input size, params (training cfg), params
# (deploy, fused), GFLOPs
OFFICIAL = {
    'tiny': ('yolov7-tiny', 640, 6_228_762, 6_219_709, 13.8),
    'l': ('yolov7', 640, 37_622_682, 36_905_341, 104.7),
    'x': ('yolov7x', 640, 71_347_394, 71_311_741, 189.9),
    'w6': ('yolov7-w6', 1280, 82_312_436, 70_394_300, 360.0),
    'e6': ('yolov7-e6', 1280, 111_898_292, 97_202_940, 515.2),
    'd6': ('yolov7-d6', 1280, 154_709_364, 133_757_052, 806.8),
    'e6e': ('yolov7-e6e', 1280, 166_408_884, 151_687_420, 843.2),
}


def build_model(arch: str, device: str) -> nn.Module:
    """Our model of ``arch`` from its base config (no loss)."""
    from mmyolo.registry import MODELS
    cfg = Config.fromfile(
        str(REPO_ROOT / 'configs' / '_base_' / 'models' /
            f'yolov7_{arch}.py'))
    init_default_scope(cfg.default_scope)
    cfg.model.bbox_head.loss = None
    with torch.device(device):
        # PyTorch's default initialization: timing does not depend on values
        model = MODELS.build(cfg.model)
    return model.eval()


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_gflops(model: nn.Module, size: int) -> float:
    """GFLOPs (2 x multiply-accumulates) of the convolutions for one
    ``size`` x ``size`` image, the official convention. Runs on the meta
    device, so it costs no compute."""
    macs: List[int] = []

    def count(module, _, output):
        kernel = module.weight[0].numel()  # c_in / groups * kh * kw
        macs.append(output.numel() * kernel)

    handles = [
        m.register_forward_hook(count) for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        model(torch.empty(1, 3, size, size, device='meta'), mode='tensor')
    for handle in handles:
        handle.remove()
    return 2 * sum(macs) / 1e9


def forward_times(models: Sequence[nn.Module], size: int, warmup: int,
                  repeats: int) -> List[Dict[str, List[float]]]:
    """Wall-clock and CPU (process) seconds of batch-1 forwards at ``size``
    x ``size``, per model.

    The models run in turn, ``repeats`` times each after ``warmup`` runs, so
    that load from other processes affects all of them alike; the CPU time
    is what the forward itself computed, less sensitive to that load.
    """
    inputs = torch.rand(1, 3, size, size)
    times: List[Dict[str, List[float]]] = [
        dict(wall=[], cpu=[]) for _ in models
    ]
    with torch.no_grad():
        for i in range(warmup + repeats):
            for model, model_times in zip(models, times):
                wall, cpu = time.perf_counter(), time.process_time()
                model(inputs, mode='tensor')
                if i >= warmup:
                    model_times['wall'].append(time.perf_counter() - wall)
                    model_times['cpu'].append(time.process_time() - cpu)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--archs', default=','.join(ARCHS),
                        help='models whose size and GFLOPs are printed')
    parser.add_argument('--time-archs', default='tiny,l',
                        help="models timed on the CPU ('' for none)")
    parser.add_argument('--size', type=int, default=640,
                        help='timing input size')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    archs = [a for a in args.archs.split(',') if a]
    time_archs = [a for a in args.time_archs.split(',') if a]
    for arch in archs + time_archs:
        if arch not in OFFICIAL:
            parser.error(f'unknown arch {arch!r}; choose from {ARCHS}')

    print('model        input  params train (official)   params fused '
          '(official)   GFLOPs fused (official)')
    for arch in archs:
        name, size, train_ref, fused_ref, gflops_ref = OFFICIAL[arch]
        model = build_model(arch, 'meta')
        train_params = num_params(model)
        reparameterize(model)
        fused_params = num_params(model)
        gflops = conv_gflops(model, size)
        print(f'{name:<12} {size:>5}  {train_params:>12,} ({train_ref:>11,})'
              f'  {fused_params:>12,} ({fused_ref:>11,})'
              f'  {gflops:>8.1f} ({gflops_ref:>6.1f})')

    if time_archs:
        print(f'\nCPU forward, batch 1, {args.size}x{args.size}, '
              f'{args.threads} thread(s), best of {args.repeats} interleaved '
              'runs; seconds of wall-clock / CPU time:')
        print('model        unfused          re-parameterized  speed-up')
    for arch in time_archs:
        unfused = build_model(arch, 'cpu')
        fused = reparameterize(copy.deepcopy(unfused))
        before, after = forward_times([unfused, fused], args.size,
                                      args.warmup, args.repeats)
        best = {k: (min(before[k]), min(after[k])) for k in ('wall', 'cpu')}
        print(f'{OFFICIAL[arch][0]:<12} '
              f'{best["wall"][0]:6.3f} / {best["cpu"][0]:6.3f}  '
              f'{best["wall"][1]:6.3f} / {best["cpu"][1]:6.3f}   '
              f'{best["wall"][0] / best["wall"][1]:4.2f}x / '
              f'{best["cpu"][0] / best["cpu"][1]:4.2f}x')


if __name__ == '__main__':
    main()
