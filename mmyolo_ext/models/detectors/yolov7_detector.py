from mmengine.dist import get_world_size
from mmengine.logging import print_log
import torch
from mmyolo.models.detectors import YOLODetector

from mmyolo_ext.registry import MODELS


@MODELS.register_module()
class YOLOv7Detector(YOLODetector):
    """MMYOLO's :class:`YOLODetector`, with SyncBN only where it can run.

    ``YOLODetector`` converts every BatchNorm to SyncBatchNorm whenever more
    than one process runs; SyncBatchNorm has no CPU implementation, so a
    multi-process CPU (gloo) run would fail at its first training step. Here
    the conversion happens only when CUDA is available, as MMYOLO does on
    GPUs. Everything else is MMYOLO's detector unchanged.

    Args:
        use_syncbn (bool): Convert to SyncBatchNorm in multi-GPU runs.
            Defaults to True.
        **kwargs: The arguments of :class:`YOLODetector`.
    """

    def __init__(self, *args, use_syncbn: bool = True, **kwargs) -> None:
        on_gpus = torch.cuda.is_available()
        super().__init__(*args, use_syncbn=use_syncbn and on_gpus, **kwargs)
        if use_syncbn and not on_gpus and get_world_size() > 1:
            print_log('SyncBatchNorm skipped: it needs CUDA; each process '
                      'keeps its own BatchNorm statistics', 'current')
