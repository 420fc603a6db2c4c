"""Turn a labeling tool's YOLO export into the official YOLO layout: write a
data.yaml (and image lists) beside it, so that ``YOLODataset``, the official
``train.py`` and Ultralytics all read it. Images and labels stay where the
tool put them.

Example::

    python tools/dataset_converters/labeling_tool2yolo.py path/to/export
    python tools/train.py configs/yolov7_tiny_custom.py \
        --cfg-options data_yaml=path/to/export/data.yaml

Layouts (detected from the files present):

* CVAT "YOLO 1.1" (Darknet's layout)::

      obj.data          classes = N, names = data/obj.names,
                        train = data/train.txt[, valid = data/valid.txt]
      obj.names         one class name per line
      train.txt         lines data/obj_train_data/<image>
      obj_train_data/   <image> and <image stem>.txt side by side

  The ``data/`` prefix of the lists (Darknet runs from its own folder) is
  replaced by the export's folder; ``valid.txt`` (CVAT's ``valid`` subset)
  becomes ``val``.
* Label Studio "YOLO"::

      classes.txt       one class name per line
      images/           <image>
      labels/           <image stem>.txt
      notes.json        (optional)

An export without a validation subset (Label Studio's always) is split:
every ``round(1 / --val-fraction)``-th image, in sorted order, goes to
``val``. Missing pieces (obj.names, a listed image, classes.txt, images/)
stop with the file named; label files without an image are listed in the
summary; images without a label file are background images, as in the
official loader.
"""
import argparse
import os
import os.path as osp
from typing import Dict, List, Tuple

IMG_SUFFIXES = ('.bmp', '.jpg', '.jpeg', '.png', '.tif', '.tiff', '.dng',
                '.webp', '.mpo')


def read_darknet_data(path: str) -> Dict[str, str]:
    """``key = value`` lines of an ``obj.data`` (``#`` comments)."""
    entries = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.split('#')[0].strip()
            if not line:
                continue
            if '=' not in line:
                raise ValueError(f'{path}:{lineno}: not "key = value": '
                                 f'{line!r}')
            key, value = (s.strip() for s in line.split('=', 1))
            entries[key] = value
    return entries


def read_names(path: str) -> List[str]:
    if not osp.isfile(path):
        raise FileNotFoundError(f'class names file not found: {path}')
    with open(path) as f:
        names = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
    if not names:
        raise ValueError(f'{path}: no class names')
    return names


def in_export(root: str, darknet_path: str) -> str:
    """A path of the Darknet files (``data/...``) inside the export."""
    path = darknet_path.replace('\\', '/')
    if path.startswith('data/'):
        path = path[len('data/'):]
    return osp.normpath(osp.join(root, path))


def cvat_splits(root: str) -> Tuple[List[str], Dict[str, List[str]]]:
    data_file = osp.join(root, 'obj.data')
    data = read_darknet_data(data_file)
    if 'names' not in data:
        raise ValueError(f'{data_file}: no "names = ..." entry')
    names = read_names(in_export(root, data['names']))
    if 'classes' in data and int(data['classes']) != len(names):
        raise ValueError(f'{data_file}: classes = {data["classes"]} but '
                         f'{len(names)} names in {data["names"]}')
    splits = {}
    for key, split in (('train', 'train'), ('valid', 'val')):
        if key not in data:
            continue
        list_file = in_export(root, data[key])
        if not osp.isfile(list_file):
            raise FileNotFoundError(
                f'{list_file} ({key} = {data[key]} in {data_file}) not found')
        with open(list_file) as f:
            lines = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
        images = [in_export(root, ln) for ln in lines]
        missing = [p for p in images if not osp.isfile(p)]
        if missing:
            raise FileNotFoundError(
                f'{len(missing)} image(s) listed in {list_file} not found, '
                f'first: {missing[0]} (export from CVAT with "Save images")')
        splits[split] = images
    if 'train' not in splits:
        raise ValueError(f'{data_file}: no "train = ..." entry')
    return names, splits


def labelstudio_splits(root: str) -> Tuple[List[str], Dict[str, List[str]]]:
    names = read_names(osp.join(root, 'classes.txt'))
    img_dir = osp.join(root, 'images')
    if not osp.isdir(img_dir):
        raise FileNotFoundError(f'images folder not found: {img_dir}')
    images = sorted(
        osp.join(img_dir, n) for n in os.listdir(img_dir)
        if n.lower().endswith(IMG_SUFFIXES))
    if not images:
        raise FileNotFoundError(f'no images in {img_dir}')
    return names, dict(train=images)


def label_of(image: str) -> str:
    """The official rule (``/images/`` -> ``/labels/``, extension .txt)."""
    head, sep, tail = image.rpartition(f'{os.sep}images{os.sep}')
    path = head + f'{os.sep}labels{os.sep}' + tail if sep else image
    return osp.splitext(path)[0] + '.txt'


def convert(root: str, val_fraction: float = 0.1) -> str:
    """Write ``root/data.yaml`` and ``root/{train,val}.yolo.txt``; returns the
    data.yaml's path."""
    root = osp.abspath(root)
    if osp.isfile(osp.join(root, 'obj.data')):
        tool, (names, splits) = 'CVAT YOLO 1.1', cvat_splits(root)
    elif osp.isfile(osp.join(root, 'classes.txt')):
        tool, (names, splits) = 'Label Studio YOLO', labelstudio_splits(root)
    else:
        raise FileNotFoundError(
            f'{root}: neither obj.data (CVAT YOLO 1.1) nor classes.txt '
            '(Label Studio YOLO) found')
    if 'val' not in splits:
        if not 0 < val_fraction < 1:
            raise ValueError(f'{root} has no validation subset: '
                             '--val-fraction must be in (0, 1)')
        step = max(2, round(1 / val_fraction))
        images = splits['train']
        splits = dict(train=[p for i, p in enumerate(images) if i % step],
                      val=[p for i, p in enumerate(images) if not i % step])
    listed = {p for images in splits.values() for p in images}
    labels = {label_of(p) for p in listed}
    backgrounds = sum(not osp.isfile(label) for label in labels)
    orphans = sorted(
        osp.join(d, n) for d, _, files in os.walk(root) for n in files
        if n.endswith('.txt') and osp.join(d, n) not in labels
        and osp.dirname(osp.join(d, n)) != root)
    for split, images in splits.items():
        with open(osp.join(root, f'{split}.yolo.txt'), 'w') as f:
            f.write(''.join(p + '\n' for p in images))
    data_yaml = osp.join(root, 'data.yaml')
    with open(data_yaml, 'w') as f:
        f.write(f'# {tool} export, by '
                'tools/dataset_converters/labeling_tool2yolo.py\n'
                + ''.join(f'{s}: {s}.yolo.txt\n' for s in splits)
                + f'nc: {len(names)}\nnames: {names!r}\n')
    print(f'{tool}: {len(names)} classes, ' + ', '.join(
        f'{len(v)} {k} images' for k, v in splits.items()) +
          f', {backgrounds} without a label file (background)')
    if orphans:
        print(f'{len(orphans)} label file(s) without a listed image, left '
              f'out: {", ".join(orphans[:5])}' +
              (' ...' if len(orphans) > 5 else ''))
    print(f'wrote {data_yaml}')
    return data_yaml


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('export', help="the tool's unzipped export folder")
    parser.add_argument(
        '--val-fraction',
        type=float,
        default=0.1,
        help='share of the images held out for val when the export has no '
        'validation subset')
    args = parser.parse_args(argv)
    convert(args.export, args.val_fraction)


if __name__ == '__main__':
    main()
