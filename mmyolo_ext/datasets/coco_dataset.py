"""MMYOLO's COCO dataset with the image cache of the recipes."""
from typing import Optional

from mmyolo.datasets import YOLOv5CocoDataset

from mmyolo_ext.registry import DATASETS
from .image_cache import build_dataset_cache


@DATASETS.register_module()
class YOLOv7CocoDataset(YOLOv5CocoDataset):
    """``YOLOv5CocoDataset`` (rectangular validation batches, the dataset
    handed to the mixing transforms) plus ``cache_images``.

    The instances keep their COCO polygons (``mask``), which paste_in cuts
    objects out with and random_perspective boxes.

    Args:
        cache_images (str, optional): ``'ram'``, ``'disk'`` or None (see
            :mod:`mmyolo_ext.datasets.image_cache`). Only in training.
        **kwargs: The arguments of ``YOLOv5CocoDataset``.
    """

    def __init__(self, *args, cache_images: Optional[str] = None,
                 **kwargs) -> None:
        self.cache_images = cache_images
        self.image_cache = None
        super().__init__(*args, **kwargs)

    def full_init(self) -> None:
        if self._fully_initialized:
            return
        super().full_init()
        if not self.test_mode:
            self.image_cache = build_dataset_cache(self, self.cache_images)
