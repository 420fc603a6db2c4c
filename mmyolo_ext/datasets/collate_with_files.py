"""MMYOLO's training collate, keeping the image files of the batch and the
HSV gains left to the data preprocessor."""
from typing import Sequence

import numpy as np
import torch
from mmengine.registry import FUNCTIONS
from mmyolo.datasets.utils import yolov5_collate


@FUNCTIONS.register_module()
def yolov5_collate_with_files(data_batch: Sequence[dict],
                              use_ms_training: bool = False) -> dict:
    """``yolov5_collate`` (boxes packed as ``(N, 6)`` ``bboxes_labels``
    rows), plus in ``data_samples``:

    * ``img_metas``: per image a dict with its ``img_path``, which
      ``yolov5_collate`` drops. The data preprocessor replaces ``img_metas``
      with its own, so the model sees no change; :class:`BatchFilesHook`
      reads the files to name the images of a skipped non-finite step.
    * ``hsv_gains`` (``(N, 3)`` float64), where ``YOLOv7HSVAug(on_device=
      True)`` drew them, for :class:`YOLOv7DataPreprocessor`.
    """
    collated = yolov5_collate(data_batch, use_ms_training)
    metas = [sample['data_samples'].metainfo for sample in data_batch]
    collated['data_samples']['img_metas'] = [
        dict(img_path=meta.get('img_path', '?')) for meta in metas
    ]
    with_gains = ['hsv_gains' in meta for meta in metas]
    if any(with_gains):
        if not all(with_gains):
            raise ValueError(
                'yolov5_collate_with_files: only some samples of the batch '
                'carry hsv_gains (YOLOv7HSVAug(on_device=True)); the '
                'pipeline must give them to every sample or to none')
        collated['data_samples']['hsv_gains'] = torch.from_numpy(
            np.stack([meta['hsv_gains'] for meta in metas]))
    return collated
