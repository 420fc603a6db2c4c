from .yolov7_detector import YOLOv7Detector
from .yolov7_tta_model import YOLOv7TTAModel

__all__ = ['YOLOv7Detector', 'YOLOv7TTAModel']
