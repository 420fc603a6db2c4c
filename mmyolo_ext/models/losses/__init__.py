from .ciou import ciou_xywh
from .compute_loss_ota import ComputeLossOTA
from .dense_objectness import rows_and_objectness

__all__ = ['ciou_xywh', 'ComputeLossOTA', 'rows_and_objectness']
