"""Datasets as labeling tools export them, each fixture built here from the
tool's documented layout: Roboflow "YOLOv7 PyTorch" (root data.yaml with
``../train/images``, resolved by Ultralytics' rule), CVAT "YOLO 1.1" and
Label Studio "YOLO" (data.yaml written by
tools/dataset_converters/labeling_tool2yolo.py), COCO json -> YOLO layout ->
COCO json (coco2yolo.py, yolo2coco.py); the boxes read by YOLODataset are
the pixel boxes the fixture drew; missing pieces are named; each fixture
trains one iteration with configs/yolov7_tiny_custom.py."""
import json
import os
import runpy
import subprocess
import sys

import cv2
import numpy as np
import pytest

from helpers.concurrent_runs import command, run_all
from helpers.paths import ROOT
from mmyolo_ext.datasets.yolo_dataset import YOLODataset

CONVERTERS = ROOT / 'tools' / 'dataset_converters'
NAMES = ['cat', 'dog']
W, H = 96, 64
# per image: (class, x1, y1, x2, y2) in pixels
BOXES = {
    'a': [(0, 10, 8, 40, 30), (1, 50, 20, 90, 60)],
    'b': [(1, 0, 0, 30, 20)],
    'c': [(0, 20, 10, 70, 50)],
    'd': [(1, 5, 5, 25, 45), (0, 60, 2, 94, 30)],
    'e': [],
}


def draw(path, name):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((H, W, 3), 90, np.uint8)
    for k, x1, y1, x2, y2 in BOXES[name]:
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1),
                      (200, 40 + 100 * k, 30), -1)
    cv2.imwrite(str(path), image)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def yolo_rows(name):
    return ''.join(
        f'{k} {(x1 + x2) / 2 / W} {(y1 + y2) / 2 / H} {(x2 - x1) / W} '
        f'{(y2 - y1) / H}\n' for k, x1, y1, x2, y2 in BOXES[name])


def read_boxes(data_yaml, split):
    dataset = YOLODataset(data_yaml=str(data_yaml), split=split,
                          use_cache=False, pipeline=[])
    assert list(dataset.metainfo['classes']) == NAMES
    found = {}
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        stem = os.path.splitext(os.path.basename(info['img_path']))[0]
        found[stem] = sorted(
            (inst['bbox_label'], *np.round(inst['bbox'], 3).tolist())
            for inst in info['instances'])
    return found


def expected(names):
    return {n: sorted((k, float(x1), float(y1), float(x2), float(y2))
                      for k, x1, y1, x2, y2 in BOXES[n]) for n in names}


def run_tool(script, *args):
    out = subprocess.run([sys.executable, str(CONVERTERS / script), *map(
        str, args)], capture_output=True, text=True, cwd=ROOT)
    return out.returncode, out.stdout + out.stderr


def roboflow(tmp_path):
    """Roboflow's "YOLOv7 PyTorch" export: data.yaml at the root, splits
    train/ valid/ test/ each with images/ and labels/."""
    root = tmp_path / 'roboflow'
    for split, names in (('train', 'abc'), ('valid', 'de')):
        for n in names:
            draw(root / split / 'images' / f'{n}.jpg', n)
            write(root / split / 'labels' / f'{n}.txt', yolo_rows(n))
    (root / 'data.yaml').write_text(
        'train: ../train/images\nval: ../valid/images\n\nnc: 2\n'
        "names: ['cat', 'dog']\n")
    return root


def cvat(tmp_path):
    """CVAT "YOLO 1.1" with images: obj.data, obj.names, train.txt /
    valid.txt of data/obj_<subset>_data/<image>, labels beside images."""
    root = tmp_path / 'cvat'
    for subset, names in (('train', 'abc'), ('valid', 'de')):
        folder = root / f'obj_{subset}_data'
        for n in names:
            draw(folder / f'{n}.jpg', n)
            if BOXES[n]:  # CVAT writes a file per annotated frame
                (folder / f'{n}.txt').write_text(yolo_rows(n))
        (root / f'{subset}.txt').write_text(''.join(
            f'data/obj_{subset}_data/{n}.jpg\n' for n in names))
    (root / 'obj.names').write_text('cat\ndog\n')
    (root / 'obj.data').write_text(
        'classes = 2\ntrain = data/train.txt\nvalid = data/valid.txt\n'
        'names = data/obj.names\nbackup = backup/\n')
    return root


def labelstudio(tmp_path):
    """Label Studio "YOLO": classes.txt, images/, labels/, notes.json."""
    root = tmp_path / 'labelstudio'
    for n in 'abcde':
        draw(root / 'images' / f'{n}.jpg', n)
        write(root / 'labels' / f'{n}.txt', yolo_rows(n))
    (root / 'classes.txt').write_text('cat\ndog\n')
    (root / 'notes.json').write_text(json.dumps(dict(
        categories=[dict(id=0, name='cat'), dict(id=1, name='dog')],
        info=dict(contributor='Label Studio'))))
    return root


def test_roboflow_relative_paths_resolve_as_ultralytics(tmp_path):
    root = roboflow(tmp_path)
    # root/../train/images does not exist; Ultralytics' rule drops '../'
    assert not (root.parent / 'train').exists()
    assert read_boxes(root / 'data.yaml', 'train') == expected('abc')
    assert read_boxes(root / 'data.yaml', 'val') == expected('de')
    # a '../' path that exists is taken literally (the rule is a fallback)
    (tmp_path / 'train' / 'images').mkdir(parents=True)
    draw(tmp_path / 'train' / 'images' / 'e.jpg', 'e')
    assert set(read_boxes(root / 'data.yaml', 'train')) == {'e'}
    # and nothing at either place is named
    (root / 'data.yaml').write_text(
        'train: ../nowhere/images\nval: ../valid/images\nnames: [cat, dog]\n')
    with pytest.raises(FileNotFoundError, match='nowhere/images'):
        read_boxes(root / 'data.yaml', 'train')


def test_cvat_yolo_export(tmp_path):
    root = cvat(tmp_path)
    code, log = run_tool('labeling_tool2yolo.py', root)
    assert code == 0, log
    assert 'CVAT YOLO 1.1: 2 classes, 3 train images, 2 val images' in log
    assert '1 without a label file' in log  # e: a background frame
    assert read_boxes(root / 'data.yaml', 'train') == expected('abc')
    assert read_boxes(root / 'data.yaml', 'val') == expected('de')


def test_labelstudio_yolo_export_split(tmp_path):
    root = labelstudio(tmp_path)
    code, log = run_tool('labeling_tool2yolo.py', root, '--val-fraction',
                         '0.4')
    assert code == 0, log
    # every round(1 / 0.4) = 2nd image in sorted order goes to val
    assert read_boxes(root / 'data.yaml', 'val') == expected('ace')
    assert read_boxes(root / 'data.yaml', 'train') == expected('bd')


@pytest.mark.parametrize('tool,remove,named', [
    ('cvat', 'obj.names', 'obj.names'),
    ('cvat', 'obj_train_data/b.jpg', 'obj_train_data/b.jpg'),
    ('cvat', 'valid.txt', 'valid.txt'),
    ('labelstudio', 'classes.txt', 'classes.txt'),
    ('labelstudio', 'images', 'images'),
    ('labelstudio', 'nothing', 'neither obj.data'),
])
def test_missing_pieces_are_named(tmp_path, tool, remove, named):
    import shutil
    root = {'cvat': cvat, 'labelstudio': labelstudio}[tool](tmp_path)
    if remove == 'nothing':
        (root / 'classes.txt').unlink()
    elif (root / remove).is_dir():
        shutil.rmtree(root / remove)
    else:
        (root / remove).unlink()
    code, log = run_tool('labeling_tool2yolo.py', root)
    assert code != 0 and named in log.strip().splitlines()[-1], log


def test_labelstudio_orphan_label_is_reported(tmp_path):
    root = labelstudio(tmp_path)
    (root / 'labels' / 'ghost.txt').write_text('0 0.5 0.5 0.1 0.1\n')
    code, log = run_tool('labeling_tool2yolo.py', root)
    assert code == 0 and 'without a listed image' in log and 'ghost.txt' in log


def coco_fixture(tmp_path):
    """A COCO detection json with ids not starting at 0, a crowd box, a
    box leaving the image, and an image without boxes."""
    img_dir = tmp_path / 'coco' / 'val2017'
    images, annotations = [], []
    for i, n in enumerate('abcde'):
        draw(img_dir / f'{n}.jpg', n)
        images.append(dict(id=100 + i, file_name=f'{n}.jpg', width=W,
                           height=H))
        for k, x1, y1, x2, y2 in BOXES[n]:
            annotations.append(dict(
                id=len(annotations) + 1, image_id=100 + i,
                category_id=[3, 7][k], bbox=[x1, y1, x2 - x1, y2 - y1],
                area=(x2 - x1) * (y2 - y1), iscrowd=0))
    annotations.append(dict(id=99, image_id=100, category_id=3,
                            bbox=[0, 0, 5, 5], area=25, iscrowd=1))
    ann = tmp_path / 'coco' / 'instances_val.json'
    ann.write_text(json.dumps(dict(
        images=images, annotations=annotations,
        categories=[dict(id=7, name='dog'), dict(id=3, name='cat')])))
    return ann, img_dir


def test_coco_to_yolo_to_coco_round_trip(tmp_path):
    ann, img_dir = coco_fixture(tmp_path)
    out = tmp_path / 'yolo'
    code, log = run_tool('coco2yolo.py', '--out', out, '--split', 'train',
                         ann, img_dir, '--split', 'val', ann, img_dir)
    assert code == 0, log
    assert '1 crowd boxes left out' in log
    # category ids 3, 7 -> classes 0, 1 (rank of the id), names in that order
    assert read_boxes(out / 'data.yaml', 'val') == expected('abcde')
    back = tmp_path / 'back.json'
    code, log = run_tool('yolo2coco.py', out / 'data.yaml', '--split', 'val',
                         '--out', back)
    assert code == 0, log
    coco = json.loads(back.read_text())
    assert [c['name'] for c in coco['categories']] == NAMES
    names = {c['id']: c['name'] for c in coco['categories']}
    files = {im['id']: os.path.basename(im['file_name'])
             for im in coco['images']}
    assert sorted(files.values()) == [f'{n}.jpg' for n in 'abcde']
    assert all(im['width'] == W and im['height'] == H
               for im in coco['images'])
    got = sorted((files[a['image_id']][0], names[a['category_id']],
                  *np.round(a['bbox'], 3).tolist())
                 for a in coco['annotations'])
    want = sorted((n, NAMES[k], float(x1), float(y1), float(x2 - x1),
                   float(y2 - y1)) for n in 'abcde'
                  for k, x1, y1, x2, y2 in BOXES[n])
    assert got == want


def test_coco_missing_image_is_named(tmp_path):
    ann, img_dir = coco_fixture(tmp_path)
    (img_dir / 'c.jpg').unlink()
    code, log = run_tool('coco2yolo.py', '--out', tmp_path / 'yolo',
                         '--split', 'val', ann, img_dir)
    assert code != 0 and 'c.jpg' in log.strip().splitlines()[-1], log


LAYOUTS = ('roboflow', 'cvat', 'labelstudio', 'coco')


def layout_data_yaml(tmp_path, tool):
    """The data.yaml that a user of ``tool`` trains with: the export itself
    (Roboflow) or what the converter writes from it."""
    if tool == 'coco':
        ann, img_dir = coco_fixture(tmp_path)
        data_yaml = tmp_path / 'yolo' / 'data.yaml'
        assert run_tool('coco2yolo.py', '--out', data_yaml.parent, '--split',
                        'train', ann, img_dir, '--split', 'val', ann,
                        img_dir)[0] == 0
        return data_yaml
    root = {'roboflow': roboflow, 'cvat': cvat,
            'labelstudio': labelstudio}[tool](tmp_path)
    if tool != 'roboflow':
        assert run_tool('labeling_tool2yolo.py', root, '--val-fraction',
                        '0.4')[0] == 0
    return root / 'data.yaml'


@pytest.fixture(scope='module')
def one_iteration_runs(tmp_path_factory):
    """tools/train.py, one iteration of configs/yolov7_tiny_custom.py on
    each layout; the four runs side by side (each single-threaded)."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    works, calls = {}, []
    for tool in LAYOUTS:
        tmp_path = tmp_path_factory.mktemp(tool)
        data_yaml = layout_data_yaml(tmp_path, tool)
        works[tool] = tmp_path / 'work'
        calls.append(command([
            sys.executable, str(ROOT / 'tools' / 'train.py'),
            str(ROOT / 'configs' / 'yolov7_tiny_custom.py'), '--work-dir',
            str(works[tool]), '--cfg-options', f'data_yaml={data_yaml}',
            'max_epochs=1', 'train_batch_size_per_gpu=2',
            'img_scale=(64,64)', 'train_num_workers=0', 'val_num_workers=0',
            'persistent_workers=False', 'train_cfg.val_interval=2'
        ], cwd=ROOT, env=env, timeout=600))
    return {tool: (out, works[tool])
            for tool, out in zip(LAYOUTS, run_all(*calls))}


@pytest.mark.parametrize('tool', LAYOUTS)
def test_each_layout_trains_one_iteration(one_iteration_runs, tool):
    out, work = one_iteration_runs[tool]
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert (work / 'epoch_1.pth').is_file(), log[-4000:]
