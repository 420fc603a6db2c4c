"""Test-time augmentation as the official ``test.py --augment`` does it."""
import copy
import math
from typing import List, Sequence, Union

import torch
import torch.nn.functional as F
from mmdet.structures import DetDataSample
from mmengine.model import BaseTTAModel
from mmengine.structures import InstanceData
from torch import Tensor

from mmyolo_ext.registry import MODELS
from ..dense_heads.idetect_head import (clip_to_original, select_top_scores,
                                        undo_letterbox)


def postprocess_decoded(head, boxes: Tensor, scores: Tensor,
                        img_meta: dict) -> InstanceData:
    """A YOLOv7 head's post-processing of one image's decoded boxes: its
    ``test_cfg`` thresholds, multi-label top-k and NMS, with the boxes taken
    back through the letterbox to the original image (what
    ``predict_by_feat`` does after decoding).

    Args:
        head (IDetectHead): The head (``test_cfg``, ``num_classes``, NMS).
        boxes (Tensor): ``(N, 4)`` x1, y1, x2, y2 in input pixels.
        scores (Tensor): ``(N, 1 + nc)`` sigmoid objectness and class
            scores (:meth:`IDetectHead.decode`).
        img_meta (dict): The image's meta (scale_factor, pad_param,
            ori_shape).
    """
    cfg = copy.deepcopy(head.test_cfg)
    score_thr = cfg.get('score_thr', -1)
    objectness, cls_scores = scores[:, 0], scores[:, 1:]
    if score_thr > 0:
        keep = objectness > score_thr
        boxes, objectness, cls_scores = (boxes[keep], objectness[keep],
                                         cls_scores[keep])
    cls_scores = cls_scores * objectness[:, None]
    cls_scores, labels, keep = select_top_scores(
        cls_scores, score_thr, cfg.get('nms_pre', 100000),
        cfg.get('multi_label', True) and head.num_classes > 1)
    results = InstanceData(
        scores=cls_scores, labels=labels, bboxes=boxes[keep])
    undo_letterbox(results.bboxes, img_meta)
    results = head._bbox_post_process(
        results=results, cfg=cfg, rescale=False, with_nms=True,
        img_meta=img_meta)
    clip_to_original(results.bboxes, img_meta)
    return results


@MODELS.register_module()
class YOLOv7TTAModel(BaseTTAModel):
    """The official YOLOv7 test-time augmentation, in mmdet's ``tta_model``
    convention (``tools/test.py --tta`` wraps the config's model in it).

    Each batch of the ordinary test pipeline (letterboxed images) is run
    once per pass; a pass resizes the network input by ``scale`` (bilinear)
    and pads its bottom and right to a multiple of the largest stride with
    grey ``pad_value`` (the official ``scale_img``), after a left-right flip
    where ``flips`` says so. The decoded boxes of every pass are mapped back
    to the unaugmented input (divided by the scale, mirrored back) and
    concatenated, and the head's post-processing (score threshold,
    multi-label top-k, NMS, max detections, undoing the letterbox) runs once
    over all of them: the official merge before NMS. mmdet's
    ``DetTTAModel`` instead merges the per-pass results after their NMS.

    Args:
        module (dict | nn.Module): The detector (a YOLOv7 detector whose
            ``bbox_head`` has ``decode``).
        scales (Sequence[float]): Input scale of each pass. Defaults to the
            official (1, 0.83, 0.67).
        flips (Sequence[bool]): Whether each pass flips left-right.
            Defaults to the official (False, True, False).
        pad_value (float): Pixel value of the padding, before the data
            preprocessor's normalization (official: 0.447 of 255).
        data_preprocessor (dict, optional): Overrides the module's.
    """

    def __init__(self,
                 module: Union[dict, torch.nn.Module],
                 scales: Sequence[float] = (1, 0.83, 0.67),
                 flips: Sequence[bool] = (False, True, False),
                 pad_value: float = 0.447 * 255,
                 data_preprocessor: Union[dict, None] = None) -> None:
        super().__init__(module=module, data_preprocessor=data_preprocessor)
        if len(scales) != len(flips) or not scales:
            raise ValueError(f'scales {list(scales)} and flips {list(flips)} '
                             'must name the same, non-zero number of passes')
        self.scales = [float(s) for s in scales]
        self.flips = [bool(f) for f in flips]
        self.pad_value = pad_value

    def _normalized_pad(self, inputs: Tensor) -> Tensor:
        """The padding value per channel, normalized as the inputs are."""
        preprocessor = self.module.data_preprocessor
        pad = inputs.new_full((inputs.shape[1], 1, 1), self.pad_value)
        if getattr(preprocessor, '_enable_normalize', False):
            pad = (pad - preprocessor.mean) / preprocessor.std
        return pad

    def augment(self, inputs: Tensor, scale: float, flip: bool) -> Tensor:
        """One pass's input: flipped, resized by ``scale`` and padded (bottom,
        right) to a multiple of the largest stride."""
        if flip:
            inputs = inputs.flip(-1)
        if scale == 1:
            return inputs
        height, width = inputs.shape[-2:]
        size = (int(height * scale), int(width * scale))
        resized = F.interpolate(
            inputs, size=size, mode='bilinear', align_corners=False)
        stride = int(max(self.module.bbox_head.featmap_strides))
        padded_h = math.ceil(height * scale / stride) * stride
        padded_w = math.ceil(width * scale / stride) * stride
        out = self._normalized_pad(inputs).expand(
            inputs.shape[0], inputs.shape[1], padded_h, padded_w).clone()
        out[..., :size[0], :size[1]] = resized
        return out

    def decode_passes(self, inputs: Tensor) -> tuple:
        """Boxes ``(bs, N, 4)`` (x1, y1, x2, y2 in the unaugmented input's
        pixels) and sigmoid objectness and class scores ``(bs, N, 1 + nc)``
        of all passes, concatenated in pass order."""
        head = self.module.bbox_head
        width = inputs.shape[-1]
        all_boxes, all_scores = [], []
        for scale, flip in zip(self.scales, self.flips):
            feats = self.module.extract_feat(self.augment(inputs, scale, flip))
            boxes, scores = head.decode(head(feats))
            boxes = boxes / scale
            if flip:  # mirror back: x1' = W - x2, x2' = W - x1
                boxes = torch.stack([
                    width - boxes[..., 2], boxes[..., 1],
                    width - boxes[..., 0], boxes[..., 3]
                ], dim=-1)
            all_boxes.append(boxes)
            all_scores.append(scores)
        return torch.cat(all_boxes, dim=1), torch.cat(all_scores, dim=1)

    def postprocess(self, boxes: Tensor, scores: Tensor,
                    img_meta: dict) -> InstanceData:
        """The head's post-processing of one image's decoded boxes
        (:func:`postprocess_decoded`)."""
        return postprocess_decoded(self.module.bbox_head, boxes, scores,
                                   img_meta)

    def test_step(self, data: Union[dict, tuple, list]) -> List[DetDataSample]:
        """Predict a batch of the test pipeline with all passes merged."""
        data = self.module.data_preprocessor(data, False)
        samples = data['data_samples']
        boxes, scores = self.decode_passes(data['inputs'])
        for i, sample in enumerate(samples):
            sample.pred_instances = self.postprocess(boxes[i], scores[i],
                                                     sample.metainfo)
        return samples

    def merge_preds(self, data_samples_list):
        raise NotImplementedError(
            'YOLOv7TTAModel merges the passes before NMS in test_step; it '
            'takes the plain test pipeline, not TestTimeAug views')
