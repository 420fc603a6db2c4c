from .bad_images import BadImageError, BadImageLog, probe_image
from .collate_with_files import yolov5_collate_with_files
from .shapes_dataset import SyntheticShapesDataset
from .synthetic_shapes import (SHAPE_CLASSES, export_yolo_layout,
                               generate_shapes_dataset)
from .tolerant_loading import TolerantLoadImageFromFile
from .yolo_dataset import YOLODataset, list_images, read_data_yaml
from .yolo_labels import LabelError, img2label_path, parse_label_file

__all__ = [
    'BadImageError', 'BadImageLog', 'LabelError', 'SHAPE_CLASSES',
    'SyntheticShapesDataset', 'TolerantLoadImageFromFile', 'YOLODataset',
    'export_yolo_layout', 'generate_shapes_dataset', 'img2label_path',
    'list_images', 'parse_label_file', 'probe_image', 'read_data_yaml',
    'yolov5_collate_with_files'
]
