"""A synthetic detection dataset of filled shapes, in COCO format.

The embedded demo must train and evaluate without downloading anything, so it
brings its own data: images of filled circles, rectangles and triangles on
textured, noisy backgrounds, with COCO ``instances`` annotation files, written
once under a data root and reused afterwards.

The task is small but not trivial: 1-8 objects per image, boxes of 12-120 px
(uniform), random colours (kept apart from the background they sit on),
rotated rectangles and irregular triangles whose boxes hold background,
overlaps (every object keeps at least ``min_visible`` of its area), Gaussian
noise, and at most one unlabelled line on the background.

Generation is deterministic: image ``i`` of a split draws from
``numpy.random.default_rng([seed, split_index, i])``, so the same arguments
give byte-identical annotation files. It is safe when several processes start
at once (a distributed run): each writes into a private temporary directory
and renames it into place; the first rename wins and the others are dropped.

Layout under ``root``::

    annotations/instances_train.json
    annotations/instances_val.json
    train/000000.jpg ...
    val/000000.jpg ...
    spec.json            # the arguments that made it

:func:`export_yolo_layout` writes the same data in the official YOLO layout
(``data.yaml``, ``images/``, ``labels/``).
"""
import argparse
import json
import math
import os
import os.path as osp
import shutil
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

SHAPE_CLASSES = ('circle', 'rectangle', 'triangle')
# bumped whenever the same arguments would draw different data, so that data
# made by an older version is reported instead of silently reused
FORMAT_VERSION = 3
SPLITS = ('train', 'val')
# cv2 drawing with 4 fractional bits gives sub-pixel shape geometry
_SHIFT = 4
_ONE = 1 << _SHIFT


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour field plus line clutter (uint8, HxWx3)."""
    coarse = rng.uniform(30, 225, size=(4, 4, 3)).astype(np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    # medium-frequency blotches, so the texture is not just a gradient
    blotches = rng.normal(0, 10, size=(size // 16, size // 16, 3))
    field += cv2.resize(blotches.astype(np.float32), (size, size),
                        interpolation=cv2.INTER_LINEAR)
    img = np.clip(field, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 2))):
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        p2 = tuple(int(v) for v in rng.integers(0, size, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.line(img, p1, p2, colour, int(rng.integers(1, 3)), cv2.LINE_AA)
    return img


def _shape_polygon(rng: np.random.Generator, label: int, extent: float,
                   cx: float, cy: float) -> Optional[np.ndarray]:
    """Vertices (Nx2, float) of a rectangle or triangle whose larger box side
    is ``extent``, centred on (cx, cy); None for a circle."""
    if SHAPE_CLASSES[label] == 'circle':
        return None
    theta = rng.uniform(0, math.pi)
    if SHAPE_CLASSES[label] == 'rectangle':
        aspect = rng.uniform(0.5, 1.0)
        corners = np.array([[-1, -aspect], [1, -aspect], [1, aspect],
                            [-1, aspect]])
    else:  # triangle: an irregular one, vertices on jittered angles
        angles = np.array([0., 2 * math.pi / 3, 4 * math.pi / 3])
        angles += rng.uniform(-0.35, 0.35, 3)
        corners = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    rot = np.array([[math.cos(theta), -math.sin(theta)],
                    [math.sin(theta), math.cos(theta)]])
    pts = corners @ rot.T
    span = (pts.max(0) - pts.min(0)).max()
    pts = pts * (extent / span)
    pts -= (pts.max(0) + pts.min(0)) / 2  # centre the box, not the shape
    return pts + np.array([cx, cy])


def _draw(canvas: np.ndarray, label: int, extent: float, cx: float,
          cy: float, poly: Optional[np.ndarray], colour) -> None:
    # cv2 puts pixel centres on integers; our geometry uses pixel edges
    if poly is None:
        cv2.circle(canvas, (round((cx - .5) * _ONE), round((cy - .5) * _ONE)),
                   round(extent / 2 * _ONE), colour, -1, cv2.LINE_AA, _SHIFT)
    else:
        pts = np.round((poly - .5) * _ONE).astype(np.int32)
        cv2.fillPoly(canvas, [pts], colour, cv2.LINE_AA, shift=_SHIFT)


def render_image(rng: np.random.Generator,
                 size: int = 320,
                 num_objects: Tuple[int, int] = (1, 8),
                 extent_range: Optional[Tuple[float, float]] = None,
                 min_visible: float = 0.6,
                 max_tries: int = 30,
                 background: Optional[Callable[[np.random.Generator, int],
                                               np.ndarray]] = None,
                 min_contrast: int = 200) -> Tuple[np.ndarray, List[Dict]]:
    """Render one image and its objects.

    Args:
        rng (numpy.random.Generator): The source of randomness.
        size (int): Side of the square image. Defaults to 320.
        num_objects (tuple[int, int]): Least and most objects (the most may
            not fit). Defaults to (1, 8).
        extent_range (tuple[float, float], optional): Least and largest
            box side in pixels, drawn uniformly. Defaults to 12-120 px
            at 320 px, in proportion at other sizes.
        min_visible (float): Least visible share of every object's area.
        max_tries (int): Placements tried per object.
        background (callable, optional): ``(rng, size) -> HxWx3 uint8``
            image to draw on. Defaults to smooth colour fields with line
            clutter.
        min_contrast (int): Least L1 distance (sum over BGR) between an
            object's colour and the mean background under it, where 20
            draws find one. Defaults to 200.

    Returns:
        tuple: the BGR image (uint8) and one dict per object with ``label``
        (index into :data:`SHAPE_CLASSES`), ``bbox`` (x, y, w, h in pixels)
        and ``area`` (the shape's own pixel area).
    """
    if extent_range is None:
        extent_range = (size * 12 / 320, size * 120 / 320)
    img = (background or _background)(rng, size)
    owner = np.full((size, size), -1, np.int32)  # which object shows where
    areas: List[int] = []
    objects: List[Dict] = []
    wanted = int(rng.integers(num_objects[0], num_objects[1] + 1))
    for _ in range(wanted):
        label = int(rng.integers(len(SHAPE_CLASSES)))
        extent = float(rng.uniform(*extent_range))
        for _ in range(max_tries):
            cx, cy = rng.uniform(extent / 2, size - extent / 2, 2)
            poly = _shape_polygon(rng, label, extent, cx, cy)
            mask = np.zeros((size, size), np.uint8)
            _draw(mask, label, extent, cx, cy, poly, 255)
            mask = mask >= 128
            if objects:
                # every earlier object must stay mostly visible
                hidden = np.bincount(owner[mask & (owner >= 0)],
                                     minlength=len(objects))
                visible = np.array(areas) - hidden
                if (visible < min_visible * np.array(areas)).any():
                    continue
            break
        else:
            continue  # no room for this one; the image gets fewer objects
        # a colour that stands out from the background under the shape
        under = img[mask].mean(0)
        for _ in range(20):
            colour = rng.integers(0, 256, 3)
            if np.abs(colour - under).sum() >= min_contrast:
                break
        _draw(img, label, extent, cx, cy, poly,
              tuple(int(c) for c in colour))
        owner[mask] = len(objects)
        areas.append(int(mask.sum()))
        # the box of the pixels drawn (cv2's anti-aliasing widens shapes by
        # about a pixel), whole even where later objects cover it
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        objects.append(
            dict(
                label=label,
                bbox=[int(v) for v in (x0, y0, x1 - x0, y1 - y0)],
                area=areas[-1]))
    noise = rng.normal(0, float(rng.uniform(3, 10)), img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return img, objects


def write_split(root: str,
                split_index: int,
                split: str,
                num_images: int,
                size: int,
                seed: int,
                classes: Sequence[str] = SHAPE_CLASSES,
                **render_kwargs) -> None:
    """Write ``root/<split>/*.jpg`` and
    ``root/annotations/instances_<split>.json``.

    Image ``i`` draws from ``default_rng([seed, split_index, i])``;
    ``render_kwargs`` go to :func:`render_image`. With one name in
    ``classes`` every shape is that class; otherwise ``classes`` names
    the shapes of :data:`SHAPE_CLASSES`.
    """
    if len(classes) not in (1, len(SHAPE_CLASSES)):
        raise ValueError(f'classes={classes!r}: one name (every shape) or '
                         f'one per shape of {SHAPE_CLASSES}')
    os.makedirs(osp.join(root, split))
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, split_index, i])
        img, objects = render_image(rng, size, **render_kwargs)
        file_name = f'{i:06d}.jpg'
        cv2.imwrite(
            osp.join(root, split, file_name), img,
            [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append(
            dict(id=i + 1, file_name=file_name, width=size, height=size))
        for obj in objects:
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=i + 1,
                    category_id=(obj['label'] if len(classes) > 1 else
                                 0) + 1,
                    bbox=obj['bbox'],
                    area=obj['area'],
                    iscrowd=0))
    categories = [
        dict(id=k + 1, name=name, supercategory='shape')
        for k, name in enumerate(classes)
    ]
    with open(osp.join(root, 'annotations', f'instances_{split}.json'),
              'w') as f:
        json.dump(
            dict(
                images=images,
                annotations=annotations,
                categories=categories),
            f)


def generate_shapes_dataset(root: str,
                            num_train: int = 480,
                            num_val: int = 120,
                            img_size: int = 320,
                            seed: int = 0) -> bool:
    """Write the dataset under ``root`` unless it is already there.

    Args:
        root (str): Directory to create (e.g. ``data/shapes``).
        num_train (int): Training images. Defaults to 480.
        num_val (int): Validation images. Defaults to 120.
        img_size (int): Side of the square images. Defaults to 320.
        seed (int): Seed of the whole dataset. Defaults to 0.

    Returns:
        bool: True when this call wrote it, False when it existed already
        (or another process wrote it first).
    """
    spec = dict(
        version=FORMAT_VERSION,
        num_train=num_train, num_val=num_val, img_size=img_size, seed=seed)
    if not osp.isdir(root):
        for name, value in spec.items():
            if not isinstance(value, int) or value < (
                    32 if name == 'img_size' else 0):
                raise ValueError(f'generate_shapes_dataset: {name}={value!r}'
                                 ' must be a non-negative int (img_size >= '
                                 '32)')

    def write(tmp: str) -> None:
        for split_index, (split, num) in enumerate(
                zip(SPLITS, (num_train, num_val))):
            write_split(tmp, split_index, split, num, img_size, seed)

    return write_dataset_once(root, spec, write)


def write_dataset_once(root: str, spec: Dict,
                       write: Callable[[str], None]) -> bool:
    """Make ``root`` by ``write(tmp)`` into a private directory (with an
    ``annotations/`` folder) and one rename, unless ``root`` exists; an
    existing one must hold the same ``spec.json``.

    Returns:
        bool: True when this call wrote it, False when it existed already
        (or another process wrote it first).
    """
    if osp.isdir(root):
        _check_spec(root, spec)
        return False
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.tmp_shapes_', dir=parent)
    try:
        os.makedirs(osp.join(tmp, 'annotations'))
        write(tmp)
        with open(osp.join(tmp, 'spec.json'), 'w') as f:
            json.dump(spec, f)
        try:
            os.rename(tmp, root)  # atomic: a reader sees all of it or none
        except OSError:
            if not osp.isdir(root):
                raise
            return False  # another process finished first
        return True
    finally:
        if osp.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def export_yolo_layout(root: str, out: str) -> str:
    """Write the shapes dataset under ``root`` (COCO json, as
    :func:`generate_shapes_dataset` writes it) again in the official YOLO
    layout under ``out``, unless ``out`` exists already::

        out/data.yaml                  # train/val folders, nc, names
        out/images/{train,val}/000000.jpg ...  (hard links or copies)
        out/labels/{train,val}/000000.txt ...  rows "class cx cy w h"

    The same boxes: each COCO box ``x y w h`` (pixels) becomes a row
    normalized by the image's size, written with 10 significant digits; the
    class is the rank of its category id, the names those of the json.

    Args:
        root (str): The COCO-format shapes dataset.
        out (str): Directory to create.

    Returns:
        str: The path of ``out/data.yaml``.
    """
    data_yaml = osp.join(out, 'data.yaml')
    if osp.isdir(out):
        if not osp.isfile(data_yaml):
            raise FileNotFoundError(f'{out} exists but has no data.yaml')
        return data_yaml
    parent = osp.dirname(osp.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.tmp_shapes_yolo_', dir=parent)
    try:
        for split in SPLITS:
            with open(osp.join(root, 'annotations',
                               f'instances_{split}.json')) as f:
                coco = json.load(f)
            # class index = rank of the category id (names from the json)
            categories = sorted(coco['categories'], key=lambda c: c['id'])
            class_index = {c['id']: k for k, c in enumerate(categories)}
            names = [c['name'] for c in categories]
            rows: Dict[int, List[str]] = {im['id']: [] for im in
                                          coco['images']}
            sizes = {im['id']: (im['width'], im['height'])
                     for im in coco['images']}
            for ann in coco['annotations']:
                width, height = sizes[ann['image_id']]
                x, y, w, h = ann['bbox']
                values = ((x + w / 2) / width, (y + h / 2) / height,
                          w / width, h / height)
                rows[ann['image_id']].append(
                    ' '.join([str(class_index[ann['category_id']])] +
                             [f'{v:.10g}' for v in values]))
            os.makedirs(osp.join(tmp, 'images', split))
            os.makedirs(osp.join(tmp, 'labels', split))
            for im in coco['images']:
                src = osp.join(root, split, im['file_name'])
                dst = osp.join(tmp, 'images', split, im['file_name'])
                try:
                    os.link(src, dst)
                except OSError:  # another file system
                    shutil.copyfile(src, dst)
                stem = osp.splitext(im['file_name'])[0]
                with open(osp.join(tmp, 'labels', split, stem + '.txt'),
                          'w') as f:
                    f.write(''.join(r + '\n' for r in rows[im['id']]))
        with open(osp.join(tmp, 'data.yaml'), 'w') as f:
            f.write('# the synthetic shapes data in the official YOLO layout\n'
                    'train: images/train\nval: images/val\n'
                    f'nc: {len(names)}\n'
                    f'names: {json.dumps(names)}\n')
        try:
            os.rename(tmp, out)
        except OSError:
            if not osp.isdir(out):
                raise
    finally:
        if osp.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return data_yaml


def _check_spec(root: str, spec: Dict) -> None:
    path = osp.join(root, 'spec.json')
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{root} exists but has no spec.json: it is not a synthetic '
            'shapes dataset (or an interrupted copy); remove it to '
            'regenerate')
    with open(path) as f:
        found = json.load(f)
    if found != spec:
        raise ValueError(f'{root} holds a shapes dataset made with {found}, '
                         f'not the requested {spec}; remove it to regenerate')


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='output directory, e.g. data/shapes')
    parser.add_argument('--num-train', type=int, default=480)
    parser.add_argument('--num-val', type=int, default=120)
    parser.add_argument('--img-size', type=int, default=320)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--yolo-out',
        help='also write the data in the official YOLO layout here')
    args = parser.parse_args(argv)
    start = time.perf_counter()
    wrote = generate_shapes_dataset(args.root, args.num_train, args.num_val,
                                    args.img_size, args.seed)
    state = 'written' if wrote else 'already present'
    print(f'{args.root}: {state} ({time.perf_counter() - start:.1f} s)')
    if args.yolo_out:
        print(f'YOLO layout: {export_yolo_layout(args.root, args.yolo_out)}')


if __name__ == '__main__':
    main()
