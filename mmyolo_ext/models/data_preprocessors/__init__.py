from .batch_hsv import hsv_augment_batch, hsv_augment_torch
from .yolov7_data_preprocessor import (YOLOv7DataPreprocessor,
                                       check_hsv_placement)

__all__ = [
    'YOLOv7DataPreprocessor', 'check_hsv_placement', 'hsv_augment_batch',
    'hsv_augment_torch'
]
