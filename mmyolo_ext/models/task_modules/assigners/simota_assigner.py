"""SimOTA assigner of YOLOv7: dynamic-k matching of grid candidates."""
from mmyolo_ext.registry import TASK_UTILS
from .dynamic_k_matching import DEFAULT_MAX_PAIR_BYTES
from .ota_core import GridAssignerBase


@TASK_UTILS.register_module()
class SimOTAAssigner(GridAssignerBase):
    """The YOLOv7 lead-head assignment (the reference's ``ComputeLossOTA``
    ``build_targets``).

    Candidates are the YOLOv5 rule's cells (``anchor_t``, ``neighbour_bias``);
    they are matched by SimOTA's dynamic k on the decoded predictions, cost
    ``BCE(sqrt(sigmoid(cls) * sigmoid(obj)), one-hot) + iou_weight *
    -log(IoU + 1e-8)`` (see :class:`GridAssignerBase`). The YOLOX assigner
    is :class:`YOLOXSimOTAAssigner`.

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
