"""Time the recipes' training pipeline against the official
``LoadImagesAndLabels`` on the same images.

Example::

    python benchmarks/pipeline.py --make-data /tmp/coco_like --count 500
    python benchmarks/pipeline.py --data /tmp/coco_like \
        --official /work/yolov7_official --rounds 5 --samples 40

``--make-data DIR`` writes a JPEG set shaped like COCO's train2017 (long
side 640 for most images, the usual aspect ratios, photo-like texture so
the files weigh ~100-200 KB, ~7 boxes an image; labels in the YOLO layout
with a data.yaml). Then, in one process with one thread (cv2, torch):

* ms per sample of ``__getitem__``, 640 px, ``hyp.scratch.custom`` (mosaic
  4/9, random_perspective scale 0.5 / translate 0.2, HSV, flip; the
  recipe's ``configs/yolov7_l_custom.py`` train dataset), of: ours (HSV
  gains drawn there, applied by the model's data preprocessor on its
  device, as the recipes do), and ``+hsv`` with HSV applied in
  ``__getitem__`` as the official does; each also with
  ``cache_images='ram'``; MMYOLO's transforms as the recipes used
  them before (Mosaic / Mosaic9 + YOLOv5RandomAffine + YOLOv5HSVRandomAug,
  ``--mmyolo``); and with ``--official PATH`` (a checkout of
  WongKinYiu/yolov7) the official dataset without and with
  ``cache_images=True`` (RAM). Rounds are interleaved (each contender runs
  the same indices in every round) and the ratios are taken per round, so a
  load change on a shared machine hits all alike; the median is reported.
* ``--workers N``: images per second of a whole train dataloader (batch 16)
  with N worker processes, ours and the official (with their caches too).
* the data preprocessor's HSV, ms per image, on ``--hsv-device`` (CUDA
  when there is one; on the CPU it is OpenCV's, the ``+hsv`` cost).
* ``--profile``: the functions taking the time (cProfile, tottime) of ours
  and the official, grouped.
"""
import argparse
import cProfile
import json
import os
import os.path as osp
import pstats
import random
import statistics
import sys
import time
import types
from typing import Callable, Dict, List

import cv2
import numpy as np
import torch

# hyp.scratch.custom (data/hyp.scratch.custom.yaml)
HYP_CUSTOM = dict(
    lr0=0.01, lrf=0.1, momentum=0.937, weight_decay=0.0005,
    warmup_epochs=3.0, warmup_momentum=0.8, warmup_bias_lr=0.1, box=0.05,
    cls=0.3, cls_pw=1.0, obj=0.7, obj_pw=1.0, iou_t=0.20, anchor_t=4.0,
    fl_gamma=0.0, hsv_h=0.015, hsv_s=0.7, hsv_v=0.4, degrees=0.0,
    translate=0.2, scale=0.5, shear=0.0, perspective=0.0, flipud=0.0,
    fliplr=0.5, mosaic=1.0, mixup=0.0, copy_paste=0.0, paste_in=0.0,
    loss_ota=1)  # yapf: disable
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


# ---- a COCO-like JPEG set ---------------------------------------------------
def make_data(root: str, count: int, seed: int = 0) -> str:
    """``count`` photo-like JPEGs with COCO's typical sizes and ~7 boxes
    each, in the YOLO layout; returns the data.yaml."""
    rng = np.random.default_rng(seed)
    img_dir = osp.join(root, 'images', 'train')
    label_dir = osp.join(root, 'labels', 'train')
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    # (w / h, share) of train2017's common shapes
    aspects = [(4 / 3, 0.45), (3 / 4, 0.15), (3 / 2, 0.15), (2 / 3, 0.05),
               (1.0, 0.05), (16 / 9, 0.15)]
    ratios, shares = zip(*aspects)
    coco = dict(images=[], annotations=[],
                categories=[dict(id=k, name=f'c{k}') for k in range(80)])
    for i in range(count):
        long = 640 if rng.random() < 0.9 else int(rng.integers(400, 640))
        a = ratios[rng.choice(len(ratios), p=shares)]
        w, h = (long, int(round(long / a))) if a >= 1 else \
            (int(round(long * a)), long)
        # low-frequency scene + mid-frequency texture + sensor noise
        scene = cv2.resize(
            rng.integers(0, 256, (6, 8, 3)).astype(np.uint8), (w, h),
            interpolation=cv2.INTER_CUBIC).astype(np.int16)
        texture = cv2.resize(
            rng.normal(0, 30, (h // 6, w // 6, 3)).astype(np.float32),
            (w, h), interpolation=cv2.INTER_LINEAR)
        noise = rng.normal(0, 9, (h, w, 3))
        img = np.clip(scene + texture + noise, 0, 255).astype(np.uint8)
        rows = []
        for _ in range(max(1, int(rng.poisson(7)))):
            bw, bh = np.exp(rng.uniform(np.log(0.02), np.log(0.8), 2))
            cx, cy = rng.uniform(bw / 2, 1 - bw / 2), rng.uniform(
                bh / 2, 1 - bh / 2)
            color = [int(c) for c in rng.integers(0, 256, 3)]
            cv2.rectangle(img, (int((cx - bw / 2) * w), int(
                (cy - bh / 2) * h)), (int((cx + bw / 2) * w),
                                      int((cy + bh / 2) * h)), color, 3)
            cls = int(rng.integers(80))
            rows.append(f'{cls} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n')
            # in the COCO json: an octagon inside the box (paste_in's
            # polygons)
            t = np.linspace(0, 2 * np.pi, 9)[:-1]
            poly = np.stack([(cx + bw / 2 * np.cos(t)) * w,
                             (cy + bh / 2 * np.sin(t)) * h], 1)
            coco['annotations'].append(
                dict(id=len(coco['annotations']) + 1, image_id=i,
                     category_id=cls, iscrowd=0, area=bw * bh * w * h,
                     bbox=[(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w,
                           bh * h],
                     segmentation=[poly.ravel().round(2).tolist()]))
        coco['images'].append(
            dict(id=i, file_name=f'{i:06d}.jpg', width=w, height=h))
        cv2.imwrite(osp.join(img_dir, f'{i:06d}.jpg'), img,
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        with open(osp.join(label_dir, f'{i:06d}.txt'), 'w') as f:
            f.writelines(rows)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    with open(osp.join(root, 'annotations', 'instances_train.json'),
              'w') as f:
        json.dump(coco, f)
    data_yaml = osp.join(root, 'data.yaml')
    names = ', '.join(f'c{k}' for k in range(80))
    with open(data_yaml, 'w') as f:
        f.write(f'train: images/train\nval: images/train\nnc: 80\n'
                f'names: [{names}]\n')
    return data_yaml


# ---- contenders ---------------------------------------------------------------
def ours(data_yaml: str, cache=None, mmyolo=False, hsv_on_device=True):
    """``__getitem__`` of the recipe's train dataset (or of the previous
    MMYOLO-transform pipeline with the same hyp); with ``hsv_on_device``
    False, HSV is applied in ``__getitem__`` instead of by the model's data
    preprocessor."""
    from mmengine.registry import init_default_scope
    from mmyolo.registry import DATASETS

    from mmyolo_ext.engine.config_variables import load_config
    init_default_scope('mmyolo')
    cfg = load_config(
        osp.join(REPO, 'configs', 'yolov7_l_custom.py'),
        dict(data_yaml=data_yaml, cache_images=cache))
    dataset = dict(cfg.train_dataloader.dataset)
    for step in dataset['pipeline']:
        if step['type'] == 'YOLOv7HSVAug':
            step['on_device'] = hsv_on_device
    if mmyolo:
        dataset['pipeline'] = mmyolo_pipeline(HYP_CUSTOM, 640)
    return DATASETS.build(dataset)


def mmyolo_pipeline(hyp: dict, s: int) -> List[dict]:
    """The recipes' pipeline before this one: MMYOLO's transforms."""
    load = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True)
    ]
    affine = dict(
        type='YOLOv5RandomAffine', max_rotate_degree=0.0,
        max_shear_degree=0.0, max_translate_ratio=hyp['translate'],
        scaling_ratio_range=(1 - hyp['scale'], 1.1 + hyp['scale']),
        border=(-s // 2, -s // 2), border_val=(114, 114, 114))
    mosaic = dict(
        type='RandomChoice',
        transforms=[[dict(type=t, img_scale=(s, s), pad_val=114.0,
                          pre_transform=load), affine]
                    for t in ('Mosaic', 'Mosaic9')],
        prob=[0.8, 0.2])
    return [
        *load, mosaic,
        dict(type='YOLOv5HSVRandomAug', hue_delta=hyp['hsv_h'],
             saturation_delta=hyp['hsv_s'], value_delta=hyp['hsv_v']),
        dict(type='mmdet.RandomFlip', prob=hyp['fliplr']),
        dict(type='mmdet.PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                        'flip', 'flip_direction'))
    ]


def official(path: str, data_yaml: str, cache: bool):
    """The official ``LoadImagesAndLabels`` (augment, hyp.scratch.custom,
    640) on the same images. Its modules import pandas and torchvision,
    which the dataset does not use: empty stand-ins are put in their place
    when they are not installed."""
    class StandIn(types.ModuleType):
        def __getattr__(self, name):  # any attribute: another stand-in
            if name.startswith('__'):
                raise AttributeError(name)
            return StandIn(f'{self.__name__}.{name}')

    for name in ('pandas', 'requests', 'torchvision', 'torchvision.utils',
                 'torchvision.ops', 'seaborn'):
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = StandIn(name)
    if path not in sys.path:
        sys.path.insert(0, path)
    from utils.datasets import LoadImagesAndLabels
    images = osp.join(osp.dirname(data_yaml), 'images', 'train')
    return LoadImagesAndLabels(
        images, 640, 16, augment=True, hyp=HYP_CUSTOM,
        cache_images=cache, stride=32)


# ---- timing ---------------------------------------------------------------------
def per_sample(get: Callable, indices: List[int]) -> float:
    start = time.perf_counter()
    for i in indices:
        get(i)
    return (time.perf_counter() - start) / len(indices) * 1e3


def interleaved(contenders: Dict[str, Callable], n: int, rounds: int,
                samples: int, seed: int = 0) -> Dict[str, List[float]]:
    rng = random.Random(seed)
    times: Dict[str, List[float]] = {k: [] for k in contenders}
    for name, get in contenders.items():  # warm-up (page cache, imports)
        per_sample(get, list(range(min(8, n))))
    for r in range(rounds):
        indices = [rng.randrange(n) for _ in range(samples)]
        for name, get in contenders.items():
            random.seed(r)
            np.random.seed(r)
            times[name].append(per_sample(get, indices))
    return times


def loader_rate(dataset, collate, workers: int, batches: int) -> float:
    from torch.utils.data import DataLoader
    loader = DataLoader(dataset, batch_size=16, shuffle=True,
                        num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0)
    it = iter(loader)
    next(it)  # workers started
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * 16 / (time.perf_counter() - start)


def profile(get: Callable, n: int, samples: int, top: int = 12) -> None:
    rng = random.Random(1)
    indices = [rng.randrange(n) for _ in range(samples)]
    prof = cProfile.Profile()
    prof.enable()
    total = time.perf_counter()
    per_sample(get, indices)
    total = time.perf_counter() - total
    prof.disable()
    stats = pstats.Stats(prof).stats
    rows = sorted(((v[2], k) for k, v in stats.items()), reverse=True)[:top]
    print(f'| function | ms / sample | share |\n|---|---|---|')
    for tottime, (file, line, name) in rows:
        where = name if file == '~' else \
            f'{osp.basename(file)}:{line}({name})'
        print(f'| {where} | {tottime / samples * 1e3:.2f} | '
              f'{tottime / total:.0%} |')


def paste_in_cost(root: str, rounds: int, samples: int) -> None:
    """ms per sample of yolov7_l_coco.py's train dataset (hyp.scratch.p5,
    with the polygons of the COCO json) with paste_in 1.0 and 0.0, and
    with the recipe's own 0.15."""
    from mmengine.registry import init_default_scope
    from mmyolo.registry import DATASETS

    from mmyolo_ext.engine.config_variables import load_config
    init_default_scope('mmyolo')
    datasets = {}
    for p in (0.0, 0.15, 1.0):
        cfg = load_config(osp.join(REPO, 'configs', 'yolov7_l_coco.py'))
        hyp = dict(cfg.hyp, paste_in=p)
        cfg = load_config(osp.join(REPO, 'configs', 'yolov7_l_coco.py'),
                          dict(hyp=hyp))
        datasets[f'paste_in {p}'] = DATASETS.build(
            dict(cfg.train_dataloader.dataset, data_root=root,
                 ann_file='annotations/instances_train.json',
                 metainfo=dict(classes=tuple(f'c{k}' for k in range(80))),
                 data_prefix=dict(img='images/train/')))
    n = len(datasets['paste_in 0.0'])
    times = interleaved({k: d.__getitem__ for k, d in datasets.items()}, n,
                        rounds, samples)
    print(f'\npaste_in (yolov7_l_coco.py, hyp.scratch.p5: mosaic, mixup '
          f'0.15; load {os.getloadavg()[0]:.2f}):')
    base = times['paste_in 0.0']
    for name, ts in times.items():
        extra = statistics.median([a - b for a, b in zip(ts, base)])
        print(f'  {name}: {statistics.median(ts):.2f} ms / sample '
              f'(+{extra:.2f})')


def preprocessor_hsv(device: str, batch: int = 16, size: int = 640) -> None:
    """ms per image of the HSV gains applied by the model's data
    preprocessor (``hsv_augment_batch``) to a batch of photo-like images on
    ``device``: OpenCV image by image on the CPU, torch on an
    accelerator."""
    from mmyolo_ext.models.data_preprocessors import hsv_augment_batch
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (batch, 3, size // 8, size // 8),
                         dtype=np.uint8)
    inputs = torch.nn.functional.interpolate(
        torch.from_numpy(small).float(), size=(size, size),
        mode='bilinear').to(torch.uint8).to(device)
    gains = torch.from_numpy(
        rng.uniform(-1, 1, (batch, 3)) * [0.015, 0.7, 0.4] + 1)
    sync = torch.cuda.synchronize if device.startswith('cuda') else (
        lambda: None)
    hsv_augment_batch(inputs, gains)  # warm-up
    times = []
    for _ in range(5):
        sync()
        start = time.perf_counter()
        hsv_augment_batch(inputs, gains)
        sync()
        times.append((time.perf_counter() - start) / batch * 1e3)
    print(f'\nHSV in the data preprocessor ({device}, batch {batch} x '
          f'{size}): {statistics.median(times):.2f} ms / image (median of 5; '
          f'load {os.getloadavg()[0]:.2f})')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--make-data', metavar='DIR')
    parser.add_argument('--count', type=int, default=500)
    parser.add_argument('--data', metavar='DIR',
                        help='a folder written by --make-data')
    parser.add_argument('--official', metavar='PATH',
                        help='a checkout of WongKinYiu/yolov7')
    parser.add_argument('--mmyolo', action='store_true',
                        help="also the recipes' previous MMYOLO transforms")
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--samples', type=int, default=40)
    parser.add_argument('--workers', type=int, default=0,
                        help='also the dataloader rate with N workers')
    parser.add_argument('--batches', type=int, default=20)
    parser.add_argument('--profile', action='store_true')
    parser.add_argument(
        '--hsv-device', default='cuda' if torch.cuda.is_available() else
        'cpu', help="where the data preprocessor's HSV is timed")
    parser.add_argument(
        '--paste-in', action='store_true',
        help='also the cost of paste_in: the COCO recipe (yolov7_l_coco) '
        'on the COCO json of the set, paste_in 1.0 vs 0')
    args = parser.parse_args()
    if args.make_data:
        print(make_data(args.make_data, args.count))
        if not args.data:
            return
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    data_yaml = osp.join(args.data, 'data.yaml')
    print(f'load: {os.getloadavg()}')
    contenders, datasets = {}, {}
    # the recipes: HSV gains drawn in __getitem__, applied by the model's
    # data preprocessor; "+hsv": HSV applied in __getitem__ as the official
    datasets['ours'] = ours(data_yaml)
    datasets['ours ram'] = ours(data_yaml, 'ram')
    datasets['ours +hsv'] = ours(data_yaml, hsv_on_device=False)
    datasets['ours ram +hsv'] = ours(data_yaml, 'ram', hsv_on_device=False)
    if args.mmyolo:
        datasets['mmyolo'] = ours(data_yaml, mmyolo=True)
    if args.official:
        datasets['official'] = official(args.official, data_yaml, False)
        datasets['official ram'] = official(args.official, data_yaml, True)
    for name, ds in datasets.items():
        contenders[name] = ds.__getitem__
    n = len(datasets['ours'])
    times = interleaved(contenders, n, args.rounds, args.samples)
    print(f'load: {os.getloadavg()}')
    print(f'\n{args.rounds} interleaved rounds x {args.samples} samples, '
          '1 process, 1 thread, 640, hyp.scratch.custom\n')
    print('| pipeline | ms / sample (median; min-max) |\n|---|---|')
    for name, ts in times.items():
        print(f'| {name} | {statistics.median(ts):.2f} '
              f'({min(ts):.2f}-{max(ts):.2f}) |')
    pairs = [('ours', 'official'), ('ours ram', 'official ram'),
             ('ours +hsv', 'official'), ('ours ram +hsv', 'official ram'),
             ('ours +hsv', 'mmyolo'), ('ours ram', 'official')]
    for a, b in pairs:
        if a in times and b in times:
            r = [x / y for x, y in zip(times[a], times[b])]
            print(f'{a} / {b}: {statistics.median(r):.2f}x '
                  f'(rounds {min(r):.2f}-{max(r):.2f})')
    if args.workers:
        print(f'\nwhole train dataloader, batch 16, {args.workers} workers '
              f'(images/s; load {os.getloadavg()[0]:.2f}):')
        from mmyolo_ext.datasets import yolov5_collate_with_files
        for name, ds in datasets.items():
            # ours: the recipes' collate, which stacks the batch as the
            # official's does
            collate = (ds.collate_fn if name.startswith('official') else
                       yolov5_collate_with_files)
            rate = loader_rate(ds, collate, args.workers, args.batches)
            print(f'  {name}: {rate:.1f}')
    preprocessor_hsv(args.hsv_device)
    if args.paste_in:
        paste_in_cost(args.data, args.rounds, args.samples)
    if args.profile:
        for name in ('ours', 'official'):
            if name in contenders:
                print(f'\nprofile of {name} (cProfile tottime):')
                profile(contenders[name], n, args.samples)


if __name__ == '__main__':
    main()
