"""Generated demo data: the shapes set of the demo (COCO json, also exported
to the YOLO layout) and the shifted shapes set, a one-class stand-in for
users' data whose validation split is drawn unlike its training split."""
from .shapes_dataset import SyntheticShapesDataset
from .synthetic_shapes import (SHAPE_CLASSES, export_yolo_layout,
                               generate_shapes_dataset)

__all__ = [
    'SHAPE_CLASSES', 'SyntheticShapesDataset', 'export_yolo_layout',
    'generate_shapes_dataset'
]
