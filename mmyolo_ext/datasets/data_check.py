"""Check every image and annotation of a config's datasets before training.

``tools/analysis_tools/check_data.py CONFIG`` and ``tools/train.py CONFIG --check-data``
run :func:`check_config`. Each image is read and decoded with the loading
transform's own check (:class:`TolerantLoadImageFromFile`), and its size
compared with the one its annotations give. Annotations:

* COCO json datasets: what ``CocoDataset`` would drop without a word - a
  box of width or height under 1 px or area <= 0, a box outside its image,
  a category not among the dataset's classes, an annotation of an image id
  the file does not list - and boxes that reach outside their image;
* :class:`YOLODataset`: every bad label (``file:line``), bad image and
  dropped duplicate of its scan.
"""
import json
import math
import os.path as osp
from typing import Dict, List

from mmengine.config import Config
from mmengine.dataset import ConcatDataset, RepeatDataset
from mmengine.registry import DATASETS, init_default_scope

from .tolerant_loading import TolerantLoadImageFromFile
from .yolo_dataset import YOLODataset

LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def _leaf_datasets(dataset) -> List:
    if isinstance(dataset, ConcatDataset):
        return [d for sub in dataset.datasets for d in _leaf_datasets(sub)]
    if isinstance(dataset, RepeatDataset) or hasattr(dataset, 'dataset'):
        return _leaf_datasets(dataset.dataset)
    return [dataset]


def coco_annotation_problems(ann_file: str, classes) -> List[str]:
    """The annotations of a COCO json file that ``CocoDataset`` drops or
    clips, one message each (file, annotation id, image, reason)."""
    with open(ann_file) as f:
        coco = json.load(f)
    images = {im['id']: im for im in coco.get('images', [])}
    names = {c['id']: c['name'] for c in coco.get('categories', [])}
    wanted = set(classes)
    problems = []
    for ann in coco.get('annotations', []):
        where = f'{ann_file}: annotation id {ann.get("id")}'
        image = images.get(ann.get('image_id'))
        if image is None:
            problems.append(f'{where}: image_id {ann.get("image_id")} is not '
                            'among the images')
            continue
        where += f' (image {image.get("file_name")})'
        category = names.get(ann.get('category_id'))
        if category is None:
            problems.append(f'{where}: category_id {ann.get("category_id")} '
                            'is not among the categories')
            continue
        if category not in wanted:
            continue  # a class the config leaves out on purpose
        bbox = ann.get('bbox')
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and math.isfinite(v)
                           for v in bbox)):
            problems.append(f'{where}: bbox {bbox!r} is not 4 finite numbers')
            continue
        x, y, w, h = bbox
        if ann.get('area', w * h) <= 0 or w < 1 or h < 1:
            problems.append(f'{where}: bbox {bbox} (area {ann.get("area")}) '
                            'under 1 px; CocoDataset drops it')
            continue
        width, height = image.get('width'), image.get('height')
        if width is None or height is None:
            problems.append(f'{where}: its image has no width/height')
            continue
        inter_w = max(0, min(x + w, width) - max(x, 0))
        inter_h = max(0, min(y + h, height) - max(y, 0))
        if inter_w * inter_h == 0:
            problems.append(f'{where}: bbox {bbox} lies outside the '
                            f'{width}x{height} image; CocoDataset drops it')
        elif x < 0 or y < 0 or x + w > width or y + h > height:
            problems.append(f'{where}: bbox {bbox} reaches outside the '
                            f'{width}x{height} image')
    return problems


def check_dataset(dataset, name: str) -> Dict:
    """Every bad image and annotation of one (leaf) dataset.

    Returns:
        dict: ``name``, ``images`` (checked), ``bad_images`` and
        ``bad_annotations`` (messages).
    """
    loader = TolerantLoadImageFromFile()
    bad_images, bad_annotations = [], []
    if isinstance(dataset, YOLODataset):
        # its scan probed each image (a bad one is not in its data list)
        # and parsed each label file
        bad_images += dataset.scan_bad_images
        bad_annotations += dataset.scan_bad_labels
    elif getattr(dataset, 'ann_file', '') and osp.isfile(dataset.ann_file):
        bad_annotations += coco_annotation_problems(
            dataset.ann_file, dataset.metainfo.get('classes', ()))
    seen = set()
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        path = info['img_path']
        if path in seen:  # repeated (e.g. a RepeatDataset)
            continue
        seen.add(path)
        img, reason = loader.load_checked(path)
        if reason is not None:
            bad_images.append(f'{path}: {reason}')
            continue
        expected = (info.get('height'), info.get('width'))
        if None not in expected and img.shape[:2] != expected:
            bad_annotations.append(
                f'{path}: the annotations give {expected[1]}x{expected[0]} '
                f'px, the file is {img.shape[1]}x{img.shape[0]}')
    return dict(
        name=name,
        # a YOLODataset's scan probed the images it skipped, too
        images=dataset.scan_summary['images'] if isinstance(
            dataset, YOLODataset) else len(seen),
        bad_images=bad_images,
        bad_annotations=bad_annotations)


def check_config(cfg: Config, loaders=LOADERS) -> List[Dict]:
    """:func:`check_dataset` for each dataset of the config's dataloaders
    (each distinct dataset config once)."""
    init_default_scope(cfg.get('default_scope', 'mmyolo'))
    reports, done = [], []
    for loader in loaders:
        if cfg.get(loader) is None:
            continue
        dataset_cfg = cfg[loader]['dataset']
        if dataset_cfg in done:
            continue
        done.append(dataset_cfg)
        dataset_cfg = dataset_cfg.copy()
        dataset = DATASETS.build(dataset_cfg)
        for k, leaf in enumerate(_leaf_datasets(dataset)):
            suffix = f'[{k}]' if k else ''
            reports.append(
                check_dataset(leaf, f'{loader}{suffix} '
                              f'({type(leaf).__name__})'))
    return reports


def count_problems(reports: List[Dict]) -> int:
    """Bad images and annotations of all reports together."""
    return sum(
        len(r['bad_images']) + len(r['bad_annotations']) for r in reports)


def format_report(reports: List[Dict]) -> str:
    """The listing and the summary, as printed by ``tools/analysis_tools/check_data.py``."""
    lines = []
    for r in reports:
        lines.append(f'== {r["name"]}: {r["images"]} images checked, '
                     f'{len(r["bad_images"])} bad images, '
                     f'{len(r["bad_annotations"])} bad annotations')
        lines += [f'  bad image: {m}' for m in r['bad_images']]
        lines += [f'  bad annotation: {m}' for m in r['bad_annotations']]
    bad = count_problems(reports)
    lines.append(f'summary: {bad} problems in {len(reports)} datasets' +
                 ('' if bad else ' - all images and annotations are usable'))
    return '\n'.join(lines)
