"""A one-class synthetic dataset whose validation split is drawn unlike its
training split: the stand-in for a user's own data when none is at hand.

A recipe that merely fits its training images scores well on the demo data,
whose validation images are drawn like the training ones. Here they are not,
as a user's validation site differs from the training site:

============  ==================================  ==============================
              train (58 images)                   val (60 images)
============  ==================================  ==============================
background    smooth colour fields, line clutter  striped field texture in
                                                  greens and browns, patches
objects       3-10 per image, 10-64 px            6-16 per image, 7-105 px
colours       contrast >= 200 to the background   contrast >= 120
============  ==================================  ==============================

Every shape (circle, rectangle, triangle) is the one class ``object``; the
sizes follow a small real aerial set (58 tiles of 320 px, 574 objects of
7-105 px). Written once, deterministically, in COCO json (``root``, the
layout of :func:`generate_shapes_dataset`) and in the official YOLO layout
(``root/yolo/data.yaml``), so that one recipe can be run on both formats.
"""
import argparse
import os.path as osp
from typing import Optional, Sequence

import cv2
import numpy as np

from .synthetic_shapes import (SPLITS, _background, export_yolo_layout,
                               write_dataset_once, write_split)

SHIFTED_FORMAT_VERSION = 1
CLASS_NAME = 'object'
IMG_SIZE = 320


def field_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Aerial-like ground (uint8, HxWx3): patches of greens and browns with
    row stripes at a random angle and fine speckle, unlike the smooth
    colour fields of the training split."""
    base = rng.uniform([20, 60, 40], [90, 160, 140]).astype(np.float32)
    img = np.empty((size, size, 3), np.float32)
    img[:] = base
    for _ in range(int(rng.integers(2, 6))):  # fields of another crop
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(size // 6, size // 2, 2)
        img[y0:y0 + h, x0:x0 + w] = base + rng.normal(0, 25, 3)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(6, 20)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = (xs * np.cos(theta) + ys * np.sin(theta)) * (2 * np.pi / period)
    img += rng.uniform(10, 35) * np.sin(phase)[..., None]
    img += rng.normal(0, 12, img.shape)
    img = cv2.GaussianBlur(img, (3, 3), 0)
    return np.clip(img, 0, 255).astype(np.uint8)


# split -> (images, render_image arguments)
SPLIT_STYLES = {
    'train': (58, dict(num_objects=(3, 10), extent_range=(10, 64),
                       background=_background, min_contrast=200)),
    'val': (60, dict(num_objects=(6, 16), extent_range=(7, 105),
                     background=field_texture, min_contrast=120)),
}


def generate_shifted_shapes(root: str, seed: int = 0) -> str:
    """Write the dataset under ``root`` (COCO json) and ``root/yolo`` (YOLO
    layout) unless they are there.

    Args:
        root (str): Directory to create, e.g. ``data/shifted_shapes``.
        seed (int): Seed of the whole dataset. Defaults to 0.

    Returns:
        str: The path of the YOLO layout's ``data.yaml``.
    """
    spec = dict(version=SHIFTED_FORMAT_VERSION, seed=seed, kind='shifted')

    def write(tmp: str) -> None:
        for split_index, split in enumerate(SPLITS):
            num_images, style = SPLIT_STYLES[split]
            write_split(tmp, split_index, split, num_images, IMG_SIZE, seed,
                        classes=(CLASS_NAME, ), **style)

    write_dataset_once(root, spec, write)
    return export_yolo_layout(root, osp.join(root, 'yolo'))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='output directory')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    print(generate_shifted_shapes(args.root, args.seed))


if __name__ == '__main__':
    main()
