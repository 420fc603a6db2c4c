"""Convert COCO json detection annotations into the official YOLO layout.

Example::

    python tools/dataset_converters/coco2yolo.py --out data/my_yolo \
        --split train annotations/instances_train.json images/train \
        --split val annotations/instances_val.json images/val

writes::

    out/data.yaml                      train: images/train, val: ..., nc, names
    out/images/<split>/<file_name>     hard links (copies across file systems)
    out/labels/<split>/<stem>.txt      rows "class cx cy w h", normalized

The class index is the rank of the category id (names from ``categories``,
the same in every split). Crowd boxes (``iscrowd: 1``) are left out, as
Ultralytics' JSON2YOLO does; boxes of zero width or height too; both are
counted in the summary. Every image of ``images`` gets a label file (empty
for an image without boxes: a background image).
"""
import argparse
import json
import os
import os.path as osp
import shutil
from collections import Counter
from typing import Dict, List, Sequence


def load_coco(ann_file: str) -> dict:
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'COCO annotation file not found: {ann_file}')
    with open(ann_file) as f:
        coco = json.load(f)
    for key in ('images', 'annotations', 'categories'):
        if key not in coco:
            raise ValueError(f'{ann_file}: no {key!r} list (not a COCO '
                             'detection file)')
    return coco


def convert_split(coco: dict, ann_file: str, img_dir: str, out: str,
                  split: str, class_index: Dict[int, int]) -> Counter:
    """Write one split's images and label files; returns what was left out."""
    counts = Counter()
    images = {im['id']: im for im in coco['images']}
    rows: Dict[int, List[str]] = {i: [] for i in images}
    for ann in coco['annotations']:
        image = images.get(ann['image_id'])
        if image is None:
            raise ValueError(f'{ann_file}: annotation {ann.get("id")} refers '
                             f'to image id {ann["image_id"]}, not in images')
        if ann['category_id'] not in class_index:
            raise ValueError(f'{ann_file}: annotation {ann.get("id")} has '
                             f'category_id {ann["category_id"]}, not in '
                             'categories')
        if ann.get('iscrowd', 0):
            counts['crowd boxes left out'] += 1
            continue
        x, y, w, h = ann['bbox']
        if w <= 0 or h <= 0:
            counts['empty boxes left out'] += 1
            continue
        width, height = image['width'], image['height']
        # clipped to the image, as the official label check requires
        x1, y1 = max(x, 0), max(y, 0)
        x2, y2 = min(x + w, width), min(y + h, height)
        values = ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height,
                  (x2 - x1) / width, (y2 - y1) / height)
        rows[ann['image_id']].append(' '.join(
            [str(class_index[ann['category_id']])] +
            [f'{v:.10g}' for v in values]))
        counts['boxes'] += 1
    os.makedirs(osp.join(out, 'images', split), exist_ok=True)
    os.makedirs(osp.join(out, 'labels', split), exist_ok=True)
    for image_id, image in images.items():
        src = osp.join(img_dir, image['file_name'])
        if not osp.isfile(src):
            raise FileNotFoundError(f'{ann_file}: image {image["file_name"]} '
                                    f'(id {image_id}) not found: {src}')
        name = image['file_name'].replace('/', '_')  # flat split folder
        dst = osp.join(out, 'images', split, name)
        if not osp.exists(dst):
            try:
                os.link(src, dst)
            except OSError:  # another file system
                shutil.copyfile(src, dst)
        stem = osp.splitext(name)[0]
        with open(osp.join(out, 'labels', split, stem + '.txt'), 'w') as f:
            f.write(''.join(r + '\n' for r in rows[image_id]))
        counts['images'] += 1
    return counts


def coco2yolo(splits: Sequence[Sequence[str]], out: str) -> str:
    """Convert ``(split, ann_file, img_dir)`` triples; returns the
    data.yaml's path."""
    names = None
    summary = {}
    for split, ann_file, img_dir in splits:
        coco = load_coco(ann_file)
        categories = sorted(coco['categories'], key=lambda c: c['id'])
        split_names = [c['name'] for c in categories]
        if names is None:
            names = split_names
        elif split_names != names:
            raise ValueError(f'{ann_file}: categories {split_names} differ '
                             f'from the first split\'s {names}')
        class_index = {c['id']: k for k, c in enumerate(categories)}
        summary[split] = convert_split(coco, ann_file, img_dir, out, split,
                                       class_index)
    data_yaml = osp.join(out, 'data.yaml')
    with open(data_yaml, 'w') as f:
        f.write('# converted from COCO json by '
                'tools/dataset_converters/coco2yolo.py\n')
        for split, _, _ in splits:
            f.write(f'{split}: images/{split}\n')
        f.write(f'nc: {len(names)}\nnames: {json.dumps(names)}\n')
    for split, counts in summary.items():
        print(f'{split}: ' + ', '.join(f'{v} {k}' for k, v in counts.items()))
    print(f'wrote {data_yaml}')
    return data_yaml


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', required=True, help='output dataset folder')
    parser.add_argument(
        '--split',
        nargs=3,
        action='append',
        required=True,
        metavar=('NAME', 'ANN_JSON', 'IMG_DIR'),
        help='a split (train, val or test), its COCO json and image folder')
    args = parser.parse_args(argv)
    for name, _, _ in args.split:
        if name not in ('train', 'val', 'test'):
            parser.error(f'split {name!r}: one of train, val, test')
    coco2yolo(args.split, args.out)


if __name__ == '__main__':
    main()
