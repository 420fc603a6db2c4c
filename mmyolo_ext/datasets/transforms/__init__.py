"""The official YOLOv7 training augmentation as registered transforms."""
from .hsv_aug import YOLOv7HSVAug
from .mixup import YOLOv7MixUp
from .mosaic_perspective import YOLOv7MosaicPerspective
from .paste_in import YOLOv7PasteIn

__all__ = [
    'YOLOv7HSVAug', 'YOLOv7MixUp', 'YOLOv7MosaicPerspective', 'YOLOv7PasteIn'
]
