"""A dataset in the official YOLO layout: ``data.yaml`` + images + labels."""
import contextlib
import gc
import logging
import os
import os.path as osp
import pickle
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from mmengine.logging import print_log
from mmyolo.datasets.yolov5_coco import BatchShapePolicyDataset

from mmyolo_ext.registry import DATASETS
from .bad_images import IMG_FORMATS
from .image_cache import build_dataset_cache
from .yolo_labels import (DEFAULT_TOLERANCE, LABEL_STATES, SKIP_REASONS,
                          scan_labels)

SPLITS = ('train', 'val', 'test')


def read_data_yaml(path: str) -> dict:
    """The parts of an official ``data.yaml`` a dataset needs.

    ``train`` / ``val`` / ``test`` are each a folder of images, a ``.txt``
    list of image paths, or a list of either. A relative one is resolved
    against YOLOv5's optional ``path:`` root, itself relative to the
    data.yaml's folder; without ``path:``, against the data.yaml's folder,
    and, when nothing is there, against the working directory (where the
    official ``train.py`` resolves it). A ``../`` source that is missing
    there is tried once more without its ``../``, against the same root:
    Ultralytics' rule (``ultralytics/data/utils.py`` ``check_det_dataset``)
    for Roboflow's exports, whose root data.yaml says
    ``train: ../train/images`` for the ``train/images`` folder beside it.

    Args:
        path (str): The data.yaml.

    Returns:
        dict: ``names`` (list of str), ``nc`` (int), and for each split that
        the file gives, its sources as a list of absolute paths.
    """
    import yaml

    if not osp.isfile(path):
        raise FileNotFoundError(f'data.yaml not found: {path}')
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f'{path}: not a mapping of train/val/nc/names')
    names = data.get('names')
    if isinstance(names, dict):  # YOLOv5 style {0: a, 1: b}
        ids = sorted(names)
        if ids != list(range(len(ids))):
            raise ValueError(f'{path}: names keys {ids} are not 0..n-1')
        names = [names[i] for i in ids]
    nc = data.get('nc')
    if names is None and nc is None:
        raise ValueError(f'{path}: gives neither nc nor names')
    if names is None:
        names = [f'class{i}' for i in range(int(nc))]
    names = [str(n) for n in names]
    if nc is None:
        nc = len(names)
    if int(nc) != len(names):
        raise ValueError(f'{path}: nc={nc} but {len(names)} names')
    yaml_dir = osp.dirname(osp.abspath(path))
    root = data.get('path')
    root = osp.join(yaml_dir, str(root)) if root else None
    info = dict(names=names, nc=int(nc), yaml=osp.abspath(path))
    for split in SPLITS:
        sources = data.get(split)
        if not sources:
            continue
        if isinstance(sources, str):
            sources = [sources]
        info[split] = [_resolve(str(s), root, yaml_dir) for s in sources]
    return info


def _resolve(source: str, root: Optional[str], yaml_dir: str) -> str:
    source = osp.expanduser(source)
    if osp.isabs(source):
        return osp.normpath(source)
    base = yaml_dir if root is None else root
    here = osp.normpath(osp.join(base, source))
    if not osp.exists(here) and source.startswith('../'):
        # Ultralytics' rule for Roboflow's exports (docstring above)
        beside = osp.normpath(osp.join(base, source[3:]))
        if osp.exists(beside):
            return beside
    if root is None and not osp.exists(here) and osp.exists(source):
        return osp.abspath(source)  # the official: relative to the cwd
    return here


def list_images(sources: Sequence[str]) -> List[str]:
    """The image files of a split's sources, sorted (as the official code):
    every image under a folder (recursively), every line of a ``.txt`` list
    (a relative line is relative to the list's folder), keeping only the
    extensions of :data:`IMG_FORMATS`."""
    # the extension after the last dot of the name is one of IMG_FORMATS
    suffixes = tuple(f'.{ext}' for ext in IMG_FORMATS)
    images: List[str] = []
    for source in sources:
        if osp.isdir(source):
            for dirpath, _, names in os.walk(source):
                # osp.join of a folder and a name, without its per-call cost
                prefix = dirpath if dirpath.endswith(os.sep) else \
                    dirpath + os.sep
                images += [
                    prefix + n for n in names
                    if n.lower().endswith(suffixes)
                ]
        elif osp.isfile(source):
            parent = osp.dirname(source)
            with open(source) as f:
                lines = [ln.strip() for ln in f.read().splitlines()]
            images += [
                path for path in (osp.normpath(osp.join(parent, ln))
                                  for ln in lines if ln)
                if path.lower().endswith(suffixes)
            ]
        else:
            raise FileNotFoundError(
                f'{source} does not exist (a split of data.yaml must be a '
                'folder of images, a .txt list of image paths, or a list)')
    images.sort()
    if not images:
        raise FileNotFoundError(f'no images ({", ".join(IMG_FORMATS)}) in '
                                f'{list(sources)}')
    return images


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@DATASETS.register_module()
class YOLODataset(BatchShapePolicyDataset):
    """A detection dataset in the official YOLOv5/YOLOv7 layout, read as it
    is: a ``data.yaml``, image folders or lists, and one ``.txt`` label file
    per image with rows ``class cx cy w h`` (normalized) or polygons.

    It behaves as MMYOLO's ``YOLOv5CocoDataset`` does: data infos with
    ``img_path``, ``img_id``, ``height``, ``width`` and ``instances``
    (``bbox`` in pixels x1 y1 x2 y2, ``bbox_label``, ``ignore_flag``), so
    ``LoadAnnotations``, mosaic, mixup and ``batch_shapes_cfg`` (rectangular
    validation batches) work unchanged, and ``mmdet.CocoMetric`` with
    ``ann_file=None`` takes the ground truths from it: put ``'instances'``
    in the test pipeline's ``PackDetInputs`` ``meta_keys``.

    Loading reports, through the current logger: the counts (images, label
    files found / missing / empty - missing and empty are background
    images -, skipped images, duplicate rows dropped), every bad label
    (``file:line: reason``; that image is skipped as the official code
    skips it) and every bad image (missing, empty, truncated, not an image,
    under 10 px; skipped), and the label cache used. A second start with
    unchanged files loads the cache (see :mod:`.yolo_labels`).

    Args:
        data_yaml (str): The data.yaml (relative to ``data_root`` when that
            is given).
        split (str): ``'train'``, ``'val'`` or ``'test'``. Defaults to
            ``'train'``.
        single_cls (bool): All labels become class 0, the classes
            ``('item', )`` unless the data.yaml has one name (the official
            ``--single-cls``). Class ids are still checked against ``nc``.
            Defaults to False.
        strict (bool): Raise on the first bad label or image instead of
            skipping it. Defaults to False.
        use_cache (bool): Read and write the label cache. Defaults to True.
        tolerance (float): How far normalized coordinates may leave [0, 1]
            (then clipped). Defaults to 0.005.
        filter_cfg (dict, optional): ``filter_empty_gt=True`` drops the
            background images from training (not in test mode). Defaults
            to None (kept, as the official code keeps them).
        cache_images (str, optional): ``'ram'`` or ``'disk'``: decoded,
            resized images kept for the next epochs (the official
            ``--cache-images``; see :mod:`.image_cache`). Training only.
            Defaults to None.
        **kwargs: The arguments of MMYOLO's ``BatchShapePolicyDataset`` /
            mmdet's ``BaseDetDataset`` (``pipeline``, ``test_mode``,
            ``batch_shapes_cfg``, ``data_root``, ``metainfo``...).
            ``ann_file`` is not taken: the data.yaml says it all.

    The metainfo holds ``classes`` (the data.yaml's names), ``num_classes``
    and ``data_yaml``; :func:`read_data_yaml` gives the same before a dataset
    is built.
    """

    METAINFO: Dict = dict(classes=())

    def __init__(self,
                 data_yaml: str,
                 split: str = 'train',
                 single_cls: bool = False,
                 strict: bool = False,
                 use_cache: bool = True,
                 tolerance: float = DEFAULT_TOLERANCE,
                 filter_cfg: Optional[dict] = None,
                 metainfo: Optional[dict] = None,
                 cache_images: Optional[str] = None,
                 **kwargs) -> None:
        if 'ann_file' in kwargs:
            raise TypeError('YOLODataset takes data_yaml=..., not ann_file')
        if split not in SPLITS:
            raise ValueError(f'YOLODataset: split={split!r} is not one of '
                             f'{SPLITS}')
        data_root = kwargs.get('data_root') or ''
        if data_root and not osp.isabs(data_yaml):
            data_yaml = osp.join(data_root, data_yaml)
        self.data_info_yaml = read_data_yaml(data_yaml)
        if split not in self.data_info_yaml:
            raise ValueError(f'{data_yaml}: no {split!r} entry')
        self.split = split
        self.single_cls = single_cls
        self.strict = strict
        self.use_cache = use_cache
        self.tolerance = tolerance
        self.cache_images = cache_images
        self.image_cache = None
        self.num_data_classes = self.data_info_yaml['nc']
        names = self.data_info_yaml['names']
        if single_cls:
            names = names if len(names) == 1 else ['item']
        meta = dict(
            classes=tuple(names),
            num_classes=len(names),
            data_yaml=self.data_info_yaml['yaml'])
        meta.update(metainfo or {})
        self.scan_summary: Dict[str, Union[int, str, None]] = {}
        # as logged: the bad images; the bad labels and dropped duplicates
        self.scan_bad_images: List[str] = []
        self.scan_bad_labels: List[str] = []
        super().__init__(
            ann_file=self.data_info_yaml['yaml'],
            metainfo=meta,
            filter_cfg=filter_cfg,
            **kwargs)

    def full_init(self) -> None:
        """As MMYOLO's (load, batch shapes, filter, serialize), with the
        garbage collector paused: the infos of a large split are millions of
        new containers, whose repeated collections were most of a cached
        start. Nothing made here is cyclic; reference counts free it."""
        if self._fully_initialized:
            return
        with _gc_paused():
            super().full_init()
        if not self.test_mode:
            self.image_cache = build_dataset_cache(self, self.cache_images)

    def _serialize_data(self) -> Tuple[np.ndarray, np.ndarray]:
        """mmengine's serialization - the same ``data_bytes`` (uint8, the
        pickled infos one after another) and ``data_address`` (int64, their
        cumulative ends), so ``get_data_info`` and subsets work unchanged -
        joined as bytes once instead of one array per info, and without its
        full ``gc.collect()`` (0.4 s with a model in memory), which the
        infos do not need: they hold no reference cycle."""
        dumps = pickle.dumps
        buffers = [dumps(info, protocol=4) for info in self.data_list]
        data_address = np.cumsum([len(b) for b in buffers], dtype=np.int64)
        data_bytes = np.frombuffer(bytearray().join(buffers), dtype=np.uint8)
        self.data_list.clear()  # as mmengine: the bytes are the copy kept
        return data_bytes, data_address

    def load_data_list(self) -> List[dict]:
        """Scan the split (or load its cache), report, build the infos."""
        img_files = list_images(self.data_info_yaml[self.split])
        scan, cache = scan_labels(
            img_files,
            self.num_data_classes,
            split=self.split,
            tolerance=self.tolerance,
            strict=self.strict,
            use_cache=self.use_cache)
        bad_images: List[str] = []
        bad_labels: List[str] = []
        for i in sorted(scan.messages):
            errors, notes = scan.messages[i]
            if scan.skip[i] == SKIP_REASONS.index('bad image'):
                bad_images.append(errors[0])  # the image's own error first
                errors = errors[1:]
            bad_labels += list(errors) + list(notes)
        # pixel corners of every row at once; one instance dict per row,
        # then one dict per image holding a slice of them (no per-row index)
        sizes = np.repeat(scan.sizes, np.diff(scan.offsets), axis=0)
        cls, cx, cy, w, h = scan.labels.astype(np.float64).T
        x_half, y_half = w / 2, h / 2
        boxes = np.stack([(cx - x_half) * sizes[:, 0],
                          (cy - y_half) * sizes[:, 1],
                          (cx + x_half) * sizes[:, 0],
                          (cy + y_half) * sizes[:, 1]], 1).tolist()
        classes = np.zeros_like(cls, np.int64) if self.single_cls else \
            cls.astype(np.int64)
        instances = [{
            'bbox': box,
            'bbox_label': label,
            'ignore_flag': 0
        } for box, label in zip(boxes, classes.tolist())]
        # polygon rows keep their polygon, in pixels, as COCO's 'mask'
        # (paste_in and the perspective boxes use it)
        with_polygon = np.flatnonzero(np.diff(scan.poly_offsets))
        if len(with_polygon):
            points = scan.poly_points.astype(np.float64) * np.repeat(
                sizes, np.diff(scan.poly_offsets), axis=0)
            for j in with_polygon.tolist():
                start, end = scan.poly_offsets[j:j + 2]
                instances[j]['mask'] = [points[start:end].ravel().tolist()]
        keep = np.flatnonzero(scan.skip == 0)
        data_list = [{
            'img_path': img_files[i],
            'img_id': img_id,
            'height': height,
            'width': width,
            'instances': instances[start:end]
        } for img_id, (i, width, height, start, end) in enumerate(
            zip(keep.tolist(), *scan.sizes[keep].T.tolist(),
                scan.offsets[keep].tolist(), scan.offsets[keep + 1].tolist()))]
        self.scan_bad_images, self.scan_bad_labels = bad_images, bad_labels
        messages = bad_images + bad_labels
        for message in messages:
            print_log(message, logger='current', level=logging.WARNING)
        states = np.bincount(scan.label_state, minlength=len(LABEL_STATES))
        skips = np.bincount(scan.skip, minlength=len(SKIP_REASONS))
        self.scan_summary = dict(
            images=len(img_files),
            kept=len(data_list),
            **{f'labels_{k}': int(n) for k, n in zip(LABEL_STATES, states)},
            skipped_bad_image=int(skips[1]),
            skipped_bad_label=int(skips[2]),
            duplicates_dropped=sum(
                len(notes) for _, notes in scan.messages.values()),
            **cache)
        s = self.scan_summary
        print_log(
            f'YOLODataset {self.data_info_yaml["yaml"]} [{self.split}]: '
            f'{s["images"]} images, {s["labels_found"]} label files found, '
            f'{s["labels_missing"]} missing and {s["labels_empty"]} empty '
            f'(background), {s["skipped_bad_label"]} skipped for bad labels, '
            f'{s["skipped_bad_image"]} for bad images, '
            f'{s["duplicates_dropped"]} duplicate rows dropped; {s["kept"]} '
            f'images used; cache {s["cache"]} ({s["cache_state"]})',
            logger='current',
            level=logging.WARNING if messages else logging.INFO)
        return data_list

    def filter_data(self) -> List[dict]:
        """Drop background images when ``filter_cfg.filter_empty_gt`` (in
        training only)."""
        if self.test_mode or not (self.filter_cfg or {}).get(
                'filter_empty_gt', False):
            return self.data_list
        return [d for d in self.data_list if d['instances']]
