from .ciou import ciou_xywh
from .compute_loss_ota import ComputeLossOTA

__all__ = ['ciou_xywh', 'ComputeLossOTA']
