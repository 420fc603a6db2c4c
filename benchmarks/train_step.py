"""Time one training step of our yolov7-tiny, with each speed switch, against
MMYOLO's yolov7-tiny.

A step is what MMEngine's ``train_step`` does on a batch already on the
device: forward, loss, backward, an SGD step and ``zero_grad``. The models
come from their COCO training configs (ours: ``configs/yolov7_tiny_coco.py``,
built once per variant of its speed switches; MMYOLO's: its installed
``yolov7_tiny_syncbn_fast_8x16b-300e_coco.py``), take the same batch (images
and ground truths, in MMYOLO's packed training format) and the same optimizer
(SGD, Nesterov momentum 0.937), and are timed in interleaved rounds, one step
of each model per round, so load on the machine hits all alike.

Variants of ours (the detector's switches, see ``YOLOv7Detector``):

* ``eager``: neither switch;
* ``channels_last``: NHWC weights and batches;
* ``compile``: ``torch.compile`` of the backbone / neck / head convolutions
  (the loss stays eager); its first step, compilation included, is reported;
* ``channels_last+compile``: both;
* ``amp``, ``channels_last+amp``: the step under autocast, as ``--amp``
  trains (bfloat16 on a CPU, float16 on CUDA; the loss stays float32).

With any ``amp`` variant MMYOLO's step is timed under the same autocast as
well (``MMYOLO 0.6 + autocast``): its runner refuses AMP without CUDA, so
this row is a like-for-like reference, not something its users can run on
a CPU.

Printed: per model the median step time with its interquartile range, and
the ratio to MMYOLO's step (the median over rounds of the per-round ratio,
with its range; below 1 means ours is faster); with ``--loss-share`` also the
loss's share of the step (the loss from the head's outputs, timed alone).

Usage::

    python benchmarks/train_step.py                       # 320 px, batch 8
    python benchmarks/train_step.py --variants eager channels_last
    python benchmarks/train_step.py --variants eager channels_last+amp
    python benchmarks/train_step.py --device cuda --threads 0
"""
import argparse
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

REPO_ROOT = Path(__file__).resolve().parents[1]

import mmyolo_ext  # noqa: F401  (registers the modules)

OURS = str(REPO_ROOT / 'configs' / 'yolov7_tiny_coco.py')
MMYOLO = 'mmyolo::yolov7/yolov7_tiny_syncbn_fast_8x16b-300e_coco.py'
PEER = 'mmyolo'
# variant name -> the detector's switches
VARIANTS = {
    'eager': dict(channels_last=False, compile_convs=False),
    'channels_last': dict(channels_last=True, compile_convs=False),
    'compile': dict(channels_last=False, compile_convs=True),
    'channels_last+compile': dict(channels_last=True, compile_convs=True),
    'amp': dict(channels_last=False, compile_convs=False),
    'channels_last+amp': dict(channels_last=True, compile_convs=False),
}
PEER_AMP = 'mmyolo+amp'


def autocast_of(name: str) -> bool:
    return name.endswith('amp')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=320, help='input side')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument(
        '--objects', type=int, default=8, help='ground truths per image')
    parser.add_argument(
        '--rounds', type=int, default=10, help='timed rounds (one step of '
        'each model per round)')
    parser.add_argument(
        '--warmup', type=int, default=2, help='untimed rounds first (the '
        'first compiles the compiled variants)')
    parser.add_argument(
        '--variants',
        nargs='+',
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help='our variants to time (MMYOLO is always timed)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument(
        '--threads',
        type=int,
        default=1,
        help='torch threads (default 1: a shared machine gives steadier '
        'ratios; 0 keeps torch\'s default)')
    parser.add_argument(
        '--loss-share',
        action='store_true',
        help='also time the loss alone for eager and MMYOLO')
    return parser.parse_args()


def build(config: str, device: str, **switches) -> nn.Module:
    from mmengine.hub import get_config
    from mmyolo.registry import MODELS
    cfg = get_config(config) if '::' in config else Config.fromfile(config)
    cfg.model.update(switches)
    init_default_scope('mmyolo')
    torch.manual_seed(0)  # the same initial weights for all our variants
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.to(device).train()


def make_batch(batch: int, size: int, objects: int, device: str,
               seed: int = 0) -> Tuple[torch.Tensor, dict]:
    """Images in [0, 1] and ``bboxes_labels`` rows [image, class, x1, y1, x2,
    y2] (pixels), as MMYOLO's collate and data preprocessor give them."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=gen)
    wh = torch.empty(batch * objects, 2).uniform_(0.05, 0.4, generator=gen)
    centre = torch.rand(batch * objects, 2, generator=gen) * (1 - wh) + wh / 2
    boxes = torch.cat([centre - wh / 2, centre + wh / 2], 1) * size
    labels = torch.randint(0, 80, (batch * objects, 1), generator=gen)
    image_ids = torch.arange(batch).repeat_interleave(objects)[:, None]
    rows = torch.cat([image_ids.float(), labels.float(), boxes], 1)
    metas = [
        dict(batch_input_shape=(size, size), img_shape=(size, size))
        for _ in range(batch)
    ]
    return images.to(device), dict(bboxes_labels=rows.to(device),
                                   img_metas=metas)


def loss_fn(model: nn.Module) -> Callable[[tuple, dict], dict]:
    """The head's loss from its forward outputs (no backbone, no backward).

    MMYOLO's loss rescales the ground-truth tensor it is given in place, so
    both get a fresh copy each call."""
    head = model.bbox_head

    def ours(outs, samples):
        targets, hw = head.targets_from_samples(samples, outs[0].device)
        return head.loss_by_feat(outs, targets, hw)

    def mmyolo(outs, samples):
        return head.loss_by_feat(*outs, samples['bboxes_labels'].clone(),
                                 samples['img_metas'])

    return ours if hasattr(head, 'targets_from_samples') else mmyolo


def quartiles(values: List[float]) -> Tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    low, mid, high = statistics.quantiles(values, n=4)
    return low, statistics.median(values), high


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    on_cuda = device.startswith('cuda')
    if on_cuda and not torch.cuda.is_available():
        raise SystemExit(f'--device {device}: CUDA is not available here')

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize()

    def timed(fn: Callable[[], object]) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    # quiet: init_weights reports every parameter through the current logger
    MMLogger.get_instance('benchmark_train', log_level='WARNING')
    images, samples = make_batch(args.batch, args.size, args.objects, device)
    models = {
        name: build(OURS, device, **VARIANTS[name])
        for name in args.variants
    }
    models[PEER] = build(MMYOLO, device)
    if any(autocast_of(name) for name in args.variants):
        models[PEER_AMP] = build(MMYOLO, device)
    amp_dtype = torch.float16 if on_cuda else torch.bfloat16
    optimizers = {
        name: torch.optim.SGD(
            m.parameters(), lr=1e-4, momentum=0.937, nesterov=True)
        for name, m in models.items()
    }
    first_loss: Dict[str, float] = {}

    def step(name: str) -> None:
        model, optimizer = models[name], optimizers[name]
        fresh = dict(samples, bboxes_labels=samples['bboxes_labels'].clone())
        with torch.autocast(device.split(':')[0], dtype=amp_dtype,
                            enabled=autocast_of(name)):
            losses = model.loss(images, fresh)
            loss, _ = model.parse_losses(losses)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        first_loss.setdefault(name, loss.item())

    def loss_only(name: str) -> None:
        model, feats = head_inputs[name]
        outs = model.bbox_head(tuple(f.requires_grad_() for f in feats))
        loss_fn(model)(outs, samples)

    # timing the head forward alone lets it be subtracted from loss_only
    def head_only(name: str) -> None:
        model, feats = head_inputs[name]
        model.bbox_head(tuple(f.requires_grad_() for f in feats))

    share_of = [n for n in ('eager', PEER) if n in models]
    head_inputs = {}
    if args.loss_share:
        for name in share_of:
            with torch.no_grad():
                feats = models[name].extract_feat(images)
            head_inputs[name] = (models[name], [f.detach() for f in feats])

    times: Dict[str, List[float]] = {name: [] for name in models}
    loss_times: Dict[str, List[float]] = {name: [] for name in share_of}
    first_step: Dict[str, float] = {}
    for i in range(args.warmup + args.rounds):
        for name in models:  # one step each, so load drifts hit all
            t_step = timed(lambda: step(name))
            first_step.setdefault(name, t_step)
            if i >= args.warmup:
                times[name].append(t_step)
            if args.loss_share and name in loss_times and i >= args.warmup:
                t_loss = timed(lambda: loss_only(name)) - timed(
                    lambda: head_only(name))
                loss_times[name].append(max(t_loss, 0.))

    where = torch.cuda.get_device_name(device) if on_cuda else (
        f'cpu, {torch.get_num_threads()} threads')
    print(f'training step, yolov7-tiny (80 classes), batch {args.batch}, '
          f'{args.size} px, {args.objects} ground truths per image, {where}, '
          f'{args.rounds} interleaved rounds after {args.warmup} warm-up, '
          f'torch {torch.__version__}')
    print(f'  {"model":34s} {"median ms":>9s} {"IQR ms":>15s} '
          f'{"ratio":>6s} {"ratio range":>13s} {"1st step s":>10s} '
          f'{"1st loss":>9s}')
    peer_times = times[PEER]
    peer_labels = {PEER: 'MMYOLO 0.6 (peer)',
                   PEER_AMP: 'MMYOLO 0.6 + autocast'}
    for name in list(args.variants) + [p for p in peer_labels
                                       if p in models]:
        low, mid, high = quartiles(times[name])
        ratios = sorted(t / p for t, p in zip(times[name], peer_times))
        label = peer_labels.get(name, f'mmyolo_ext {name}')
        print(f'  {label:34s} {1000 * mid:9.1f} {1000 * low:7.1f}-'
              f'{1000 * high:<7.1f} {statistics.median(ratios):6.3f} '
              f'{ratios[0]:6.3f}-{ratios[-1]:<6.3f} '
              f'{first_step[name]:10.1f} {first_loss[name]:9.3f}')
    print('  ratio: step time / MMYOLO\'s (float32), per round (< 1: '
          'faster); speed-up = 1 / ratio')
    if PEER_AMP in models:
        print(f'  autocast: {str(amp_dtype).replace("torch.", "")} '
              '(the loss in float32)')
    for name in share_of if args.loss_share else []:
        loss_ms = 1000 * statistics.median(loss_times[name])
        step_ms = 1000 * statistics.median(times[name])
        print(f'  loss alone, {name}: {loss_ms:.1f} ms '
              f'({100 * loss_ms / step_ms:.1f} % of the step)')


if __name__ == '__main__':
    main()
