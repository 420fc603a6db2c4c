from .bad_images import BadImageError, BadImageLog, probe_image
from .coco_dataset import YOLOv7CocoDataset
from .collate_with_files import yolov5_collate_with_files
from .image_cache import ImageCache
from .tolerant_loading import TolerantLoadImageFromFile
from .transforms import (YOLOv7HSVAug, YOLOv7MixUp, YOLOv7MosaicPerspective,
                         YOLOv7PasteIn)
from .yolo_dataset import YOLODataset, list_images, read_data_yaml
from .yolo_labels import LabelError, img2label_path, parse_label_file

__all__ = [
    'BadImageError', 'BadImageLog', 'ImageCache', 'LabelError', 'TolerantLoadImageFromFile',
    'YOLODataset', 'YOLOv7CocoDataset', 'YOLOv7HSVAug', 'YOLOv7MixUp', 'YOLOv7MosaicPerspective',
    'YOLOv7PasteIn', 'img2label_path', 'list_images', 'parse_label_file',
    'probe_image', 'read_data_yaml', 'yolov5_collate_with_files'
]
