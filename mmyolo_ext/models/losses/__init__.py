from .ciou import ciou_xywh
from .compute_loss_ota import ComputeLossOTA
from .yolo_targets import yolo_targets

__all__ = ['ciou_xywh', 'ComputeLossOTA', 'yolo_targets']
