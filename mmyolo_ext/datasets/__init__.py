from .shapes_dataset import SyntheticShapesDataset
from .synthetic_shapes import SHAPE_CLASSES, generate_shapes_dataset

__all__ = ['SHAPE_CLASSES', 'SyntheticShapesDataset', 'generate_shapes_dataset']
