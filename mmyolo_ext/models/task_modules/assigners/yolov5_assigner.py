"""YOLOv5 assigner: every candidate cell of the anchor-ratio rule matches."""
from mmyolo_ext.registry import TASK_UTILS
from .ota_core import GridAssignerBase


@TASK_UTILS.register_module()
class YOLOv5Assigner(GridAssignerBase):
    """YOLOv5 label assignment (the reference YOLOv7 ``ComputeLoss``).

    A ground truth is matched to an anchor when their width and height ratios
    are all below ``anchor_t``, at the cell holding its centre and the
    neighbour cells closer than ``neighbour_bias`` (0.5: the two nearest, 3
    cells in all; 1.0: all four, 5 cells). No cost-based selection.

    Args:
        anchor_t (float): Largest box/anchor side ratio.
        neighbour_bias (float): 0.5 (3 cells) or 1.0 (5 cells).
    """

    def __init__(self, anchor_t: float = 4.0,
                 neighbour_bias: float = 0.5) -> None:
        super().__init__(
            anchor_t=anchor_t, neighbour_bias=neighbour_bias, topk=None)
