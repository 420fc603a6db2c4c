"""Label assigners of the YOLO heads.

YOLOv7's grid assigners (:class:`YOLOv5Assigner`, :class:`SimOTAAssigner`,
:class:`V7AuxAssigner`) are configurations of :class:`GridAssignerBase`
(``ota_core.py``): ``candidates`` (the YOLOv5 rule) then ``match`` (SimOTA's
dynamic k, ``dynamic_k_matching.py``: a plain per-image reference and the
batched form used in training). A new grid assigner is a subclass in a file
of its own, registered in ``TASK_UTILS`` and named in the loss config's
``assigner`` / ``aux_assigner``. :class:`YOLOXSimOTAAssigner` is the batched
drop-in for MMDetection's YOLOX ``SimOTAAssigner``.
"""
from .dynamic_k_matching import (dynamic_k_matching,
                                 dynamic_k_matching_reference)
from .ota_core import (GridAssignerBase, GridCells, gather_cells,
                       grid_candidates)
from .simota_assigner import SimOTAAssigner
from .v7_aux_assigner import V7AuxAssigner
from .yolov5_assigner import YOLOv5Assigner
from .yolox_simota_assigner import YOLOXSimOTAAssigner

__all__ = [
    'GridAssignerBase', 'GridCells', 'dynamic_k_matching',
    'dynamic_k_matching_reference', 'gather_cells', 'grid_candidates',
    'SimOTAAssigner', 'V7AuxAssigner', 'YOLOv5Assigner', 'YOLOXSimOTAAssigner'
]
