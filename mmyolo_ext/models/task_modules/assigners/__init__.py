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
