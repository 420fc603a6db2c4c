from .yolov7_detector import YOLOv7Detector

__all__ = ['YOLOv7Detector']
