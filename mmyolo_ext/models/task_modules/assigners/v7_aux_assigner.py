"""Lead-guided assigner of the YOLOv7 auxiliary head."""
from mmyolo_ext.registry import TASK_UTILS
from .dynamic_k_matching import DEFAULT_MAX_PAIR_BYTES
from .ota_core import GridAssignerBase


@TASK_UTILS.register_module()
class V7AuxAssigner(GridAssignerBase):
    """Assignment of the YOLOv7 auxiliary (coarse) head.

    The reference's ``ComputeLossAuxOTA`` ``build_targets2``: 5-cell
    candidates (neighbour bias 1.0) matched by SimOTA with the top 20 IoUs
    for the dynamic k. The caller passes the **lead** head's predictions:
    the auxiliary head is supervised by the lead head's assignment quality.

    Args:
        anchor_t (float): Largest box/anchor side ratio of a candidate.
        neighbour_bias (float): Neighbour-cell bias (1.0: 5 cells).
        topk (int): Number of top IoUs summed for the dynamic k.
        iou_weight (float): Weight of ``-log(IoU)`` in the cost.
        max_pair_bytes (int): Working memory of one matching chunk.
    """

    def __init__(self,
                 anchor_t: float = 4.0,
                 neighbour_bias: float = 1.0,
                 topk: int = 20,
                 iou_weight: float = 3.0,
                 max_pair_bytes: int = DEFAULT_MAX_PAIR_BYTES) -> None:
        super().__init__(
            anchor_t=anchor_t,
            neighbour_bias=neighbour_bias,
            topk=topk,
            iou_weight=iou_weight,
            max_pair_bytes=max_pair_bytes)
