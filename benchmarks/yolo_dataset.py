"""Time YOLODataset's first start (label scan, cache written) against its
second (cache loaded) on a generated dataset in the official YOLO layout.

Example::

    python benchmarks/yolo_dataset.py --num-images 20000

Writes ``--num-images`` tiny JPEGs (``--img-size`` px) with 1-3 label rows
each, and ``data.yaml``, into a temporary directory (removed afterwards
unless ``--keep DIR``; a ``--keep DIR`` that already holds a data.yaml is
reused as it is, its label cache deleted first), then builds the dataset
twice: the first start scans every file and writes the cache, the second
loads it (what a user sees when training again). Both run with the files
in the page cache (a user process cannot drop it), so the first start is a
lower bound of a cold one. ``--profile`` prints the cProfile of the second
start.
"""
import argparse
import cProfile
import glob
import io
import pstats
import os
import os.path as osp
import shutil
import tempfile
import time

import cv2
import numpy as np

from mmyolo_ext.datasets import YOLODataset


def write_dataset(root: str, num_images: int, img_size: int) -> str:
    """``num_images`` images and labels under ``root``; the data.yaml."""
    rng = np.random.default_rng(0)
    img_dir = osp.join(root, 'images', 'train')
    label_dir = osp.join(root, 'labels', 'train')
    os.makedirs(img_dir)
    os.makedirs(label_dir)
    ok, jpeg = cv2.imencode(
        '.jpg', rng.integers(0, 255, (img_size, img_size, 3), np.uint8))
    assert ok
    jpeg = jpeg.tobytes()
    for i in range(num_images):
        with open(osp.join(img_dir, f'{i:06d}.jpg'), 'wb') as f:
            f.write(jpeg)
        rows = []
        for _ in range(int(rng.integers(1, 4))):
            w, h = rng.uniform(0.05, 0.5, 2)
            cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2,
                                                               1 - h / 2)
            rows.append(f'{rng.integers(3)} {cx:.6f} {cy:.6f} {w:.6f} '
                        f'{h:.6f}\n')
        with open(osp.join(label_dir, f'{i:06d}.txt'), 'w') as f:
            f.writelines(rows)
    data_yaml = osp.join(root, 'data.yaml')
    with open(data_yaml, 'w') as f:
        f.write('train: images/train\nnc: 3\nnames: [a, b, c]\n')
    return data_yaml


def timed_start(data_yaml: str, profile: bool = False) -> tuple:
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    dataset = YOLODataset(data_yaml=data_yaml, split='train')
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - start
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats('cumulative') \
            .print_stats(30)
        print(out.getvalue())
    return elapsed, dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--num-images', type=int, default=20000)
    parser.add_argument('--img-size', type=int, default=16)
    parser.add_argument(
        '--keep',
        help='write the dataset here and keep it (reused when it is there)')
    parser.add_argument(
        '--profile', action='store_true',
        help='print the cProfile of the second (cached) start')
    args = parser.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix='yolo_bench_')
    try:
        data_yaml = osp.join(root, 'data.yaml')
        if osp.isfile(data_yaml):
            for cache in glob.glob(osp.join(root, 'labels', '*.cache.npz')):
                os.remove(cache)  # the first start scans again
            print(f'reusing {root}')
        else:
            t0 = time.perf_counter()
            data_yaml = write_dataset(root, args.num_images, args.img_size)
            print(f'wrote {args.num_images} images + labels in '
                  f'{time.perf_counter() - t0:.1f} s')
        first, dataset = timed_start(data_yaml)
        assert dataset.scan_summary['cache_state'] == 'written'
        second, dataset = timed_start(data_yaml, args.profile)
        assert dataset.scan_summary['cache_state'] == 'loaded'
        assert len(dataset) == args.num_images
        print(f'first start (scan, cache written): {first:.2f} s')
        print(f'second start (cache loaded):       {second:.2f} s '
              f'({first / second:.1f}x faster)')
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    main()
