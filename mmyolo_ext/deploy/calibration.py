"""Calibration images for post-training quantization: the user's own
training images, letterboxed by the config's test pipeline, as the exported
graph takes them (RGB in [0, 1], ``(3, H, W)`` float32)."""
import copy
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np

from mmengine.registry import DATASETS, TRANSFORMS, DefaultScope


def _innermost(dataset_cfg: dict) -> dict:
    while 'dataset' in dataset_cfg:  # RepeatDataset, ConcatDataset of one...
        dataset_cfg = dataset_cfg['dataset']
    return dataset_cfg


def config_train_images(cfg) -> List[str]:
    """The image paths of the config's training set (no pipeline run)."""
    dataset_cfg = copy.deepcopy(_innermost(dict(cfg.train_dataloader.dataset)))
    dataset_cfg['pipeline'] = []
    dataset_cfg.pop('cache_images', None)
    dataset = DATASETS.build(dataset_cfg)
    return [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]


def source_images(source: str) -> List[str]:
    """The training images a ``--calib-data`` names: a data.yaml (its
    ``train`` split, resolved as :class:`YOLODataset` does) or a folder or
    ``.txt`` list of images."""
    from mmyolo_ext.datasets.yolo_dataset import list_images, read_data_yaml
    if source.endswith(('.yaml', '.yml')):
        info = read_data_yaml(source)
        if 'train' not in info:
            raise ValueError(f'{source}: no train entry to calibrate on')
        return list_images(info['train'])
    if not osp.exists(source):
        raise FileNotFoundError(f'--calib-data {source} does not exist')
    return list_images([source])


def letterbox_pipeline(cfg):
    """The config's test pipeline up to the letterbox (loading, resize,
    padding; annotations and packing dropped)."""
    from mmengine.dataset import Compose
    dataset_cfg = _innermost(dict(cfg.test_dataloader.dataset))
    steps = [
        step for step in dataset_cfg['pipeline']
        if 'LoadAnnotations' not in step['type']
        and 'Pack' not in step['type']
    ]
    return Compose([TRANSFORMS.build(copy.deepcopy(s)) for s in steps])


def calibration_images(cfg,
                       img_size: Sequence[int],
                       source: Optional[str] = None,
                       count: int = 300) -> List[np.ndarray]:
    """Up to ``count`` training images, evenly spread over the set, each
    through the test pipeline's letterbox and padded (grey 114, bottom and
    right, as the test batches are) to ``img_size``.

    Args:
        cfg (Config): The model config (test pipeline; training set when
            ``source`` is None).
        img_size (Sequence[int]): The export's ``(height, width)``.
        source (str, optional): A data.yaml, folder or list of images.
        count (int): Images taken.

    Returns:
        list[np.ndarray]: ``(3, H, W)`` float32 RGB in [0, 1].
    """
    if count < 1:
        raise ValueError(f'--calib-images must be positive, got {count}')
    # the config's scope resolves its dataset and transform names
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        paths = source_images(source) if source else config_train_images(cfg)
        pipeline = letterbox_pipeline(cfg)
    picks = np.linspace(0, len(paths) - 1, min(count, len(paths)))
    height, width = (int(s) for s in img_size)
    images = []
    for index in np.unique(picks.round().astype(int)):
        results = pipeline(dict(img_path=paths[index], img_id=int(index)))
        if results is None:
            raise ValueError(f'{paths[index]}: the test pipeline dropped it')
        img = results['img']  # (h, w, 3) BGR uint8 (mmcv's loading)
        if img.shape[0] > height or img.shape[1] > width:
            raise ValueError(
                f'{paths[index]} letterboxes to {img.shape[:2]}, larger than '
                f'the export size {height}x{width}: export at the test '
                "pipeline's size")
        canvas = np.full((height, width, 3), 114, dtype=np.uint8)
        canvas[:img.shape[0], :img.shape[1]] = img
        images.append(
            np.ascontiguousarray(canvas[..., ::-1].transpose(2, 0, 1),
                                 dtype=np.float32) / 255.)
    return images
