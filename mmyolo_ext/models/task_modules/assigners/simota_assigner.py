"""SimOTA assigner for YOLOv7 grid candidates (and YOLOX centre priors)."""
from mmyolo_ext.registry import TASK_UTILS
from .ota_core import DEFAULT_MAX_PAIR_BYTES, GridAssignerBase


@TASK_UTILS.register_module()
class SimOTAAssigner(GridAssignerBase):
    """SimOTA dynamic-k assignment.

    YOLOv7 mode (:meth:`assign_grid`): the candidates are the YOLOv5 rule's
    cells (``anchor_t``, ``neighbour_bias``), matched by the cost
    ``class BCE + iou_weight * -log(IoU + 1e-8)`` with the dynamic k summed
    from the top ``topk`` IoUs; a cell wanted by several ground truths goes to
    the cheapest one.

    Args:
        anchor_t (float): Largest box/anchor side ratio of a candidate.
        neighbour_bias (float): 0.5 (3 cells) or 1.0 (5 cells).
        topk (int): Number of top IoUs summed for the dynamic k.
        iou_weight (float): Weight of ``-log(IoU)`` in the cost.
        max_pair_bytes (int): Working memory of one matching chunk.
    """

    def __init__(self,
                 anchor_t: float = 4.0,
                 neighbour_bias: float = 0.5,
                 topk: int = 10,
                 iou_weight: float = 3.0,
                 max_pair_bytes: int = DEFAULT_MAX_PAIR_BYTES) -> None:
        super().__init__(
            anchor_t=anchor_t,
            neighbour_bias=neighbour_bias,
            topk=topk,
            iou_weight=iou_weight,
            max_pair_bytes=max_pair_bytes)
