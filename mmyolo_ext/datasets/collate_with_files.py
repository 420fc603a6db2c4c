"""MMYOLO's training collate, keeping the image files of the batch."""
from typing import Sequence

from mmengine.registry import FUNCTIONS
from mmyolo.datasets.utils import yolov5_collate


@FUNCTIONS.register_module()
def yolov5_collate_with_files(data_batch: Sequence[dict],
                              use_ms_training: bool = False) -> dict:
    """``yolov5_collate`` (boxes packed as ``(N, 6)`` ``bboxes_labels``
    rows), plus ``data_samples['img_metas']``: per image a dict with its
    ``img_path``, which ``yolov5_collate`` drops. The data preprocessor
    replaces ``img_metas`` with its own, so the model sees no change;
    :class:`BatchFilesHook` reads the files to name the images of a skipped
    non-finite step."""
    collated = yolov5_collate(data_batch, use_ms_training)
    collated['data_samples']['img_metas'] = [
        dict(img_path=sample['data_samples'].metainfo.get('img_path', '?'))
        for sample in data_batch
    ]
    return collated
