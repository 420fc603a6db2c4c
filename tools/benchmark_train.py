"""Time one training step of our yolov7-tiny against MMYOLO's yolov7-tiny.

A step is what MMEngine's ``train_step`` does on a batch already on the
device: forward, loss, backward and an SGD step. Both models come from their
COCO training configs (ours: ``configs/yolov7_tiny_coco.py``; MMYOLO's: its
installed ``yolov7_tiny_syncbn_fast_8x16b-300e_coco.py``), take the same
batch (images and ground truths, in MMYOLO's packed training format) and are
timed alternately in the same process, so load on the machine hits both
alike. Printed: the median step time of each, their ratio (ours / MMYOLO's;
below 1 means ours is faster) and the loss's share of the step (the loss
computed from the head's outputs, timed alone the same way).

Usage::

    python tools/benchmark_train.py                       # 320 px, batch 8
    python tools/benchmark_train.py --size 640 --batch 16 --repeats 20
"""
import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import mmyolo_ext  # noqa: E402,F401  (registers the modules)

OURS = str(REPO_ROOT / 'configs' / 'yolov7_tiny_coco.py')
MMYOLO = 'mmyolo::yolov7/yolov7_tiny_syncbn_fast_8x16b-300e_coco.py'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=320, help='input side')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument(
        '--objects', type=int, default=8, help='ground truths per image')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument(
        '--threads', type=int, default=None, help='torch threads')
    return parser.parse_args()


def build(config: str) -> nn.Module:
    from mmengine.hub import get_config
    from mmyolo.registry import MODELS
    cfg = get_config(config) if '::' in config else Config.fromfile(config)
    init_default_scope('mmyolo')
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.train()


def make_batch(batch: int, size: int, objects: int,
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
    return images, dict(bboxes_labels=rows, img_metas=metas)


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


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # quiet: init_weights reports every parameter through the current logger
    MMLogger.get_instance('benchmark_train', log_level='WARNING')
    images, samples = make_batch(args.batch, args.size, args.objects)
    models = {'ours': build(OURS), 'mmyolo': build(MMYOLO)}
    optimizers = {
        name: torch.optim.SGD(
            m.parameters(), lr=1e-4, momentum=0.937, nesterov=True)
        for name, m in models.items()
    }

    def step(name: str) -> None:
        model, optimizer = models[name], optimizers[name]
        fresh = dict(samples, bboxes_labels=samples['bboxes_labels'].clone())
        losses = model.loss(images, fresh)
        loss, _ = model.parse_losses(losses)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    head_outputs = {}
    for name, model in models.items():
        with torch.no_grad():
            feats = model.extract_feat(images)
        # the head's graph is built anew for each timing, as in training
        head_outputs[name] = (model, feats)

    def loss_only(name: str) -> None:
        model, feats = head_outputs[name]
        outs = model.bbox_head(tuple(f.requires_grad_() for f in feats))
        loss_fn(model)(outs, samples)

    # timing the head forward alone lets it be subtracted from loss_only
    def head_only(name: str) -> None:
        model, feats = head_outputs[name]
        model.bbox_head(tuple(f.requires_grad_() for f in feats))

    times: Dict[str, Dict[str, List[float]]] = {
        name: dict(step=[], loss=[])
        for name in models
    }
    for i in range(args.warmup + args.repeats):
        for name in models:  # alternate, so load drifts hit both
            t_step = timed(lambda: step(name))
            t_loss = timed(lambda: loss_only(name)) - timed(
                lambda: head_only(name))
            if i >= args.warmup:
                times[name]['step'].append(t_step)
                times[name]['loss'].append(max(t_loss, 0.))

    print(f'training step, yolov7-tiny (80 classes), batch {args.batch}, '
          f'{args.size} px, {args.objects} ground truths per image, '
          f'{torch.get_num_threads()} threads, median of {args.repeats}')
    medians = {}
    for name, label in (('ours', 'mmyolo_ext'), ('mmyolo', 'MMYOLO 0.6')):
        step_ms = 1000 * statistics.median(times[name]['step'])
        loss_ms = 1000 * statistics.median(times[name]['loss'])
        medians[name] = step_ms
        print(f'  {label:11s} step {step_ms:8.1f} ms   loss {loss_ms:7.1f} '
              f'ms ({100 * loss_ms / step_ms:4.1f} % of the step)')
    print(f'  ratio ours / MMYOLO: {medians["ours"] / medians["mmyolo"]:.3f}'
          ' (< 1: ours is faster)')


if __name__ == '__main__':
    main()
