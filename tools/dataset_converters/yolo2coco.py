"""Convert a split of a YOLO-layout dataset (a data.yaml) to a COCO json, for
mmdet's ``CocoDataset`` and ``CocoMetric``.

Example::

    python tools/dataset_converters/yolo2coco.py data.yaml --split val \
        --out annotations/instances_val.json

Images are those of the split (folders, ``.txt`` lists; the data.yaml's
paths resolved as ``YOLODataset`` resolves them), ``file_name`` relative to
``--img-root`` (default: the data.yaml's folder). Category ids are the class
index + 1, names from the data.yaml. Each label row ``class cx cy w h``
(normalized; a polygon row as its bounding box) becomes a box ``x y w h`` in
pixels of the image's size. A label file with a bad row stops the
conversion with the file and line; an image without a label file is a
background image (no annotations), as in the official loader.
"""
import argparse
import json
import os.path as osp

from PIL import Image

from mmyolo_ext.datasets.yolo_dataset import list_images, read_data_yaml
from mmyolo_ext.datasets.yolo_labels import img2label_path, parse_label_file


def yolo2coco(data_yaml: str, split: str, out: str,
              img_root: str = None) -> dict:
    info = read_data_yaml(data_yaml)
    if split not in info:
        raise ValueError(f'{data_yaml}: no {split!r} entry')
    img_root = img_root or osp.dirname(osp.abspath(data_yaml))
    names = info['names']
    coco = dict(
        images=[],
        annotations=[],
        categories=[dict(id=k + 1, name=n) for k, n in enumerate(names)])
    backgrounds = 0
    for image_id, path in enumerate(list_images(info[split]), 1):
        with Image.open(path) as im:
            width, height = im.size
        coco['images'].append(
            dict(id=image_id, file_name=osp.relpath(path, img_root),
                 width=width, height=height))
        label_file = img2label_path(path)
        if not osp.isfile(label_file):
            backgrounds += 1
            continue
        rows, errors = parse_label_file(label_file, info['nc'])[:2]
        if errors:
            raise ValueError('bad label rows:\n' + '\n'.join(errors))
        for cls, cx, cy, w, h in rows.tolist():
            coco['annotations'].append(
                dict(id=len(coco['annotations']) + 1, image_id=image_id,
                     category_id=int(cls) + 1,
                     bbox=[(cx - w / 2) * width, (cy - h / 2) * height,
                           w * width, h * height],
                     area=w * width * h * height, iscrowd=0))
    with open(out, 'w') as f:
        json.dump(coco, f)
    print(f'{split}: {len(coco["images"])} images ({backgrounds} without a '
          f'label file), {len(coco["annotations"])} boxes -> {out}')
    return coco


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('data_yaml')
    parser.add_argument('--split', default='val',
                        choices=['train', 'val', 'test'])
    parser.add_argument('--out', required=True, help='the .json to write')
    parser.add_argument('--img-root', help="file_name's root folder "
                        "(default: the data.yaml's folder)")
    args = parser.parse_args(argv)
    yolo2coco(args.data_yaml, args.split, args.out, args.img_root)


if __name__ == '__main__':
    main()
