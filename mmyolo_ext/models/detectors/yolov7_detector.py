from typing import Union

from mmengine.dist import get_world_size
from mmengine.logging import print_log
import torch
from mmyolo.models.detectors import YOLODetector
from torch import Tensor

from mmyolo_ext.registry import MODELS
from .conv_speed import (CompileCfg, as_channels_last, compile_raw_maps,
                         to_channels_last)


@MODELS.register_module()
class YOLOv7Detector(YOLODetector):
    """MMYOLO's :class:`YOLODetector`, with SyncBN only where it can run and
    two speed switches.

    ``YOLODetector`` converts every BatchNorm to SyncBatchNorm whenever more
    than one process runs; SyncBatchNorm has no CPU implementation, so a
    multi-process CPU (gloo) run would fail at its first training step. Here
    the conversion happens only when CUDA is available, as MMYOLO does on
    GPUs.

    ``channels_last`` lays out the weights and the input batches as NHWC
    (see :mod:`.conv_speed`); ``compile_convs`` runs the backbone, neck and
    head convolutions of a training step through ``torch.compile`` (the
    loss, prediction and evaluation stay eager). Neither changes the
    parameter names or the results beyond float rounding.

    As in mmdet, ``train_cfg`` (the assigners) becomes the head's
    ``train_cfg``; a ``bbox_head.train_cfg`` of its own, which mmdet would
    overwrite, is refused with a message naming ``model.train_cfg``.

    Args:
        use_syncbn (bool): Convert to SyncBatchNorm in multi-GPU runs.
            Defaults to True.
        channels_last (bool): NHWC weights and inputs. Defaults to False.
        compile_convs (bool | dict): Compile the training forward of the
            convolutions; a dict gives ``torch.compile``'s arguments.
            Defaults to False.
        **kwargs: The arguments of :class:`YOLODetector`.
    """

    def __init__(self,
                 *args,
                 use_syncbn: bool = True,
                 channels_last: bool = False,
                 compile_convs: CompileCfg = False,
                 **kwargs) -> None:
        head_train_cfg = (kwargs.get('bbox_head') or {}).get('train_cfg')
        if head_train_cfg is not None and head_train_cfg != kwargs.get(
                'train_cfg'):
            # mmdet's detector would replace it silently
            raise ValueError(
                'set the assigners in model.train_cfg, not in '
                'model.bbox_head.train_cfg: the detector hands its train_cfg '
                f'to the head (got bbox_head.train_cfg={head_train_cfg})')
        on_gpus = torch.cuda.is_available()
        super().__init__(*args, use_syncbn=use_syncbn and on_gpus, **kwargs)
        if use_syncbn and not on_gpus and get_world_size() > 1:
            print_log('SyncBatchNorm skipped: it needs CUDA; each process '
                      'keeps its own BatchNorm statistics', 'current')
        self.channels_last = channels_last
        if channels_last:
            to_channels_last(self)
        self._compiled_raw_maps = compile_raw_maps(compile_convs)

    def extract_feat(self, batch_inputs: Tensor):
        """Backbone and neck features (of a ``channels_last`` copy of the
        batch with ``channels_last``)."""
        if self.channels_last:
            batch_inputs = as_channels_last(batch_inputs)
        return super().extract_feat(batch_inputs)

    def loss(self, batch_inputs: Tensor,
             batch_data_samples: Union[list, dict]) -> dict:
        """The head's losses; the convolutions run compiled with
        ``compile_convs``."""
        if self._compiled_raw_maps is None:
            return super().loss(batch_inputs, batch_data_samples)
        raw_maps = self._compiled_raw_maps(self, batch_inputs)
        head = self.bbox_head
        targets, input_hw = head.targets_from_samples(batch_data_samples,
                                                      raw_maps[0].device)
        return head.loss_by_feat(raw_maps, targets, input_hw)
