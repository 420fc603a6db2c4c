"""ONNX export of a YOLOv7 detector: decoded outputs, or NMS in the graph.

The exported graph always holds the re-parameterized model (RepConv, BN and
implicit layers folded, P6 auxiliary head dropped). Its input ``images`` is
a ``(bs, 3, H, W)`` batch of RGB images scaled to [0, 1] (the official
export's convention), already letterboxed: resizing and padding stay
outside the graph. Where the config's data preprocessor normalizes
differently (another mean / std, BGR input), the graph starts with that
normalization, so the input convention never changes.

Outputs, by ``nms`` mode:

* ``'none'``: ``output`` ``(bs, N, 5 + nc)``, the official ``--grid``
  layout: decoded ``cx, cy, w, h`` in input pixels, sigmoid objectness,
  sigmoid class scores. With one class the class column is 1, so that
  objectness * class is the official one-class score (objectness alone).
  Rows in the official order (``models/yolo.py`` ``IDetect.forward``:
  ``view(bs, na, no, ny, nx).permute(0, 1, 3, 4, 2)``): level by level,
  and within a level anchor, then row, then column, so that row ``i`` of
  level ``l`` is anchor ``i // (ny * nx)``, cell row ``i // nx % ny``,
  column ``i % nx`` (:meth:`IDetectHead.decode_official`).
* ``'onnx'``: the standard ONNX ``NonMaxSuppression`` op (runs in
  onnxruntime), and ``'trt'``: TensorRT's ``EfficientNMS_TRT`` plugin. Both
  give the official end2end outputs ``num_dets (bs, 1)`` int32,
  ``det_boxes (bs, max_det, 4)`` float32 ``x1, y1, x2, y2`` in input
  pixels, ``det_scores (bs, max_det)`` float32 and ``det_classes (bs,
  max_det)`` int32, detections sorted by score, rows past ``num_dets``
  zero. Scores are objectness * class score (objectness alone with one
  class), one label per box (its best class), NMS per class.
"""
import json
import os
import os.path as osp
import warnings
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from .reparameterize import reparameterize

NMS_MODES = ('none', 'onnx', 'trt')
DYNAMIC_MODES = (None, 'batch', 'all')
INPUT_NAME = 'images'
RAW_OUTPUT_NAMES = ('output', )
NMS_OUTPUT_NAMES = ('num_dets', 'det_boxes', 'det_scores', 'det_classes')
METADATA_KEY = 'mmyolo_ext'  # JSON in the model's metadata_props


def single_label_scores(scores: Tensor) -> Tuple[Tensor, Tensor]:
    """Each box's detection score and label: its best class.

    Args:
        scores (Tensor): ``(bs, N, 1 + nc)`` sigmoid objectness and class
            scores (:meth:`IDetectHead.decode`; the class score is 1 for a
            one-class model).

    Returns:
        tuple[Tensor, Tensor]: ``(bs, N)`` scores objectness * class score
        and ``(bs, N)`` int64 labels.
    """
    class_scores = scores[..., 1:] * scores[..., :1]
    return class_scores.max(-1)


def scores_at_label(score: Tensor, labels: Tensor,
                    num_classes: int) -> Tensor:
    """``(bs, N, nc)`` class scores holding each box's score at its label
    and -1 elsewhere, so that an NMS per class sees each box once."""
    classes = torch.arange(num_classes, device=labels.device)
    at_label = labels.unsqueeze(-1) == classes
    return torch.where(at_label, score.unsqueeze(-1),
                       torch.full_like(score, -1.).unsqueeze(-1))


def head_row_order(rows: Tensor, featmap_sizes: Sequence,
                   num_anchors: int) -> Tensor:
    """Exported rows (per level: anchor, row, column) put back in
    :meth:`IDetectHead.decode`'s order (per level: cell, then anchor), so
    that post-processing them breaks score ties as the PyTorch model does.
    """
    bs, channels = rows.shape[0], rows.shape[-1]
    levels, start = [], 0
    for ny, nx in featmap_sizes:
        count = ny * nx * num_anchors
        level = rows[:, start:start + count].reshape(bs, num_anchors, ny, nx,
                                                     channels)
        levels.append(level.permute(0, 2, 3, 1, 4).reshape(bs, -1, channels))
        start = start + count
    return torch.cat(levels, dim=1)


class OnnxNonMaxSuppression(torch.autograd.Function):
    """The ONNX ``NonMaxSuppression`` op, for tracing only.

    Its forward returns placeholder indices of the right type (one box per
    image): when exporting, only the graph node computes the NMS.
    """

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_output: int,
                iou_threshold: float, score_threshold: float) -> Tensor:
        batch = torch.arange(boxes.shape[0], device=boxes.device)
        zeros = torch.zeros_like(batch)
        return torch.stack([batch, zeros, zeros], dim=1)

    @staticmethod
    def symbolic(g, boxes, scores, max_output: int, iou_threshold: float,
                 score_threshold: float):

        def const(value, dtype):
            return g.op('Constant', value_t=torch.tensor([value], dtype=dtype))

        return g.op('NonMaxSuppression', boxes, scores,
                    const(max_output, torch.int64),
                    const(iou_threshold, torch.float32),
                    const(score_threshold, torch.float32))


class EfficientNMSTRT(torch.autograd.Function):
    """TensorRT's ``EfficientNMS_TRT`` plugin node, for tracing only.

    Its forward returns zero tensors of the plugin's output shapes and
    types; TensorRT computes the NMS. ``box_coding`` 0: boxes are corners
    ``x1, y1, x2, y2``; ``score_activation`` 0: the scores are already
    probabilities; ``background_class`` -1: every class is an object.
    """

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, iou_threshold: float,
                score_threshold: float, max_output_boxes: int):
        bs = boxes.shape[0]
        return (boxes.new_zeros((bs, 1), dtype=torch.int32),
                boxes.new_zeros((bs, max_output_boxes, 4)),
                boxes.new_zeros((bs, max_output_boxes)),
                boxes.new_zeros((bs, max_output_boxes), dtype=torch.int32))

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float,
                 score_threshold: float, max_output_boxes: int):
        outputs = g.op(
            'TRT::EfficientNMS_TRT',
            boxes,
            scores,
            background_class_i=-1,
            box_coding_i=0,
            iou_threshold_f=iou_threshold,
            max_output_boxes_i=max_output_boxes,
            plugin_version_s='1',
            score_activation_i=0,
            score_threshold_f=score_threshold,
            outputs=4)
        # the plugin's output types and shapes (ONNX cannot infer them)
        sizes = boxes.type().varyingSizes()  # None entries: dynamic
        bs = sizes[0] if sizes else None
        shapes = ((torch.int32, [bs, 1]), (torch.float32,
                                            [bs, max_output_boxes, 4]),
                  (torch.float32, [bs, max_output_boxes]),
                  (torch.int32, [bs, max_output_boxes]))
        for output, (dtype, shape) in zip(outputs, shapes):
            output.setType(boxes.type().with_dtype(dtype).with_sizes(shape))
        return outputs


class ExportedDetector(nn.Module):
    """What the ONNX graph computes: a re-parameterized detector, its
    decoding and, optionally, NMS.

    Args:
        detector (nn.Module): A YOLOv7 detector (``extract_feat`` and an
            ``IDetectHead`` ``bbox_head``); re-parameterized here if it is
            not yet.
        nms (str): ``'none'``, ``'onnx'`` or ``'trt'`` (module docstring).
        conf_thres (float): Score threshold of the NMS modes.
        iou_thres (float): IoU threshold of the NMS modes.
        max_det (int): Detections per image of the NMS modes.
    """

    def __init__(self,
                 detector: nn.Module,
                 nms: str = 'none',
                 conf_thres: float = 0.25,
                 iou_thres: float = 0.45,
                 max_det: int = 100) -> None:
        super().__init__()
        if nms not in NMS_MODES:
            raise ValueError(f'nms must be one of {NMS_MODES}, got {nms!r}')
        if not 0 <= conf_thres < 1 or not 0 < iou_thres <= 1:
            raise ValueError(f'conf_thres {conf_thres} must be in [0, 1) and '
                             f'iou_thres {iou_thres} in (0, 1]')
        if max_det < 1:
            raise ValueError(f'max_det must be positive, got {max_det}')
        head = getattr(detector, 'bbox_head', None)
        if not callable(getattr(head, 'decode', None)):
            raise TypeError(
                f'{type(detector).__name__} has no bbox_head with decode() '
                '(an IDetectHead): only YOLOv7 detectors can be exported')
        self.detector = reparameterize(detector)
        self.nms = nms
        self.conf_thres = float(conf_thres)
        self.iou_thres = float(iou_thres)
        self.max_det = int(max_det)
        self.num_classes = head.num_classes
        self.stride = int(max(head.featmap_strides))
        self._set_input_normalization(detector.data_preprocessor)

    def _set_input_normalization(self, preprocessor: nn.Module) -> None:
        """Map the [0, 1] RGB input to what the detector was trained on."""
        self.flip_channels = not getattr(preprocessor, '_channel_conversion',
                                         True)
        mean = getattr(preprocessor, 'mean', None)
        std = getattr(preprocessor, 'std', None)
        normalize = getattr(preprocessor, '_enable_normalize', False)
        identity = (not normalize or (torch.all(mean == 0)
                                      and torch.all(std == 255)))
        self.normalize = not identity
        if self.normalize:
            self.register_buffer('mean', mean.detach().clone().view(1, -1, 1,
                                                                    1))
            self.register_buffer('std', std.detach().clone().view(1, -1, 1,
                                                                  1))

    @property
    def output_names(self) -> Tuple[str, ...]:
        return RAW_OUTPUT_NAMES if self.nms == 'none' else NMS_OUTPUT_NAMES

    def forward(self, images: Tensor):
        """Outputs of the ``nms`` mode (module docstring)."""
        if self.flip_channels:
            images = images.flip(1)
        if self.normalize:
            images = (images * 255 - self.mean) / self.std
        detector = self.detector
        head = detector.bbox_head
        raw_maps = head(detector.extract_feat(images))
        if self.nms == 'none':
            return head.decode_official(raw_maps)
        boxes, scores = head.decode(raw_maps)
        # NMS in float32: the ONNX op takes no half inputs
        boxes, scores = boxes.float(), scores.float()
        score, labels = single_label_scores(scores)
        class_scores = scores_at_label(score, labels, self.num_classes)
        if self.nms == 'trt':
            return EfficientNMSTRT.apply(boxes, class_scores, self.iou_thres,
                                         self.conf_thres, self.max_det)
        return self._onnx_nms(boxes, score, labels, class_scores)

    def _onnx_nms(self, boxes: Tensor, score: Tensor, labels: Tensor,
                  class_scores: Tensor):
        """NonMaxSuppression, then the best ``max_det`` kept boxes of each
        image in fixed-size outputs."""
        selected = OnnxNonMaxSuppression.apply(boxes,
                                               class_scores.transpose(1, 2),
                                               self.max_det, self.iou_thres,
                                               self.conf_thres)
        kept = torch.zeros_like(score)
        kept[selected[:, 0], selected[:, 2]] = 1.
        kept_score = torch.where(kept > 0, score, torch.full_like(score, -1.))
        # padding rows, so that top-k has max_det candidates on any input
        pad = torch.full_like(kept_score[:, :1], -1.).expand(-1, self.max_det)
        kept_score = torch.cat([kept_score, pad], dim=1)
        boxes = torch.cat([boxes, boxes.new_zeros(1, 1, 4).expand(
            boxes.shape[0], self.max_det, 4)], dim=1)
        labels = torch.cat([labels, labels[:, :1].expand(-1, self.max_det)],
                           dim=1)
        det_scores, order = kept_score.topk(self.max_det, dim=1)
        valid = det_scores >= 0
        det_boxes = boxes.gather(1, order.unsqueeze(-1).expand(-1, -1, 4))
        det_boxes = det_boxes * valid.unsqueeze(-1).to(det_boxes.dtype)
        det_classes = labels.gather(1, order) * valid.to(labels.dtype)
        det_scores = det_scores * valid.to(det_scores.dtype)
        num_dets = valid.sum(1, keepdim=True)
        return (num_dets.to(torch.int32), det_boxes, det_scores,
                det_classes.to(torch.int32))


def config_input_size(cfg, img_size: Optional[Sequence[int]] = None
                      ) -> Tuple[int, int]:
    """The export's ``(height, width)``: ``img_size`` (one value: square),
    else the config's ``input_size`` (else ``img_scale``; both (width,
    height)), else 640."""
    if img_size:
        if len(img_size) == 1:
            img_size = list(img_size) * 2
        if len(img_size) != 2:
            raise ValueError(f'--img-size takes HEIGHT WIDTH, got {img_size}')
        return int(img_size[0]), int(img_size[1])
    scale = cfg.get('input_size', cfg.get('img_scale', (640, 640)))
    if isinstance(scale, int):
        return scale, scale
    return int(scale[1]), int(scale[0])


def dynamic_axes_of(dynamic: Optional[str], nms: str) -> Optional[dict]:
    """``torch.onnx.export``'s dynamic axes: the batch (``'batch'``), or the
    batch and the input height and width (``'all'``)."""
    if dynamic not in DYNAMIC_MODES:
        raise ValueError(
            f'dynamic must be one of {DYNAMIC_MODES}, got {dynamic!r}')
    if dynamic is None:
        return None
    axes = {INPUT_NAME: {0: 'batch'}}
    if dynamic == 'all':
        axes[INPUT_NAME].update({2: 'height', 3: 'width'})
    if nms == 'none':
        axes['output'] = {0: 'batch'}
        if dynamic == 'all':
            axes['output'][1] = 'anchors'
    else:
        for name in NMS_OUTPUT_NAMES:
            axes[name] = {0: 'batch'}
    return axes


def export_onnx(detector: nn.Module,
                out_file: str,
                img_size: Sequence[int] = (640, 640),
                batch_size: int = 1,
                dynamic: Optional[str] = None,
                nms: str = 'none',
                conf_thres: float = 0.25,
                iou_thres: float = 0.45,
                max_det: int = 100,
                fp16: bool = False,
                opset: int = 17,
                simplify: bool = False,
                device: str = 'cpu',
                class_names: Optional[Sequence[str]] = None) -> str:
    """Export a YOLOv7 detector to an ONNX file (module docstring).

    Args:
        detector (nn.Module): The detector (see :func:`load_detector`);
            re-parameterized in place.
        out_file (str): Path of the ``.onnx`` file.
        img_size (Sequence[int]): Input ``(height, width)``, multiples of
            the largest stride; with ``dynamic='all'`` the size traced.
        batch_size (int): Batch size (traced size with a dynamic batch).
        dynamic (str, optional): None (static), ``'batch'`` or ``'all'``
            (batch, height and width).
        nms (str): ``'none'``, ``'onnx'`` or ``'trt'``.
        conf_thres, iou_thres, max_det: NMS settings of ``'onnx'`` and
            ``'trt'``.
        fp16 (bool): Half weights and input (``images`` float16); NMS
            outputs stay float32. Traced on the CPU too (onnxruntime 1.32
            runs such a graph on CPU; tested).
        opset (int): ONNX opset (>= 11).
        simplify (bool): Run onnxslim (or onnxsim) over the graph.
        device (str): Device the model is traced on.
        class_names (Sequence[str], optional): Stored in the metadata.

    Returns:
        str: ``out_file``.
    """
    import onnx
    model = ExportedDetector(detector, nms, conf_thres, iou_thres, max_det)
    height, width = (int(s) for s in img_size)
    if height % model.stride or width % model.stride or min(height,
                                                            width) <= 0:
        raise ValueError(
            f'img_size {height}x{width} (height x width) must be positive '
            f'multiples of the model stride {model.stride}')
    if batch_size < 1:
        raise ValueError(f'batch_size must be positive, got {batch_size}')
    if opset < 11:
        raise ValueError(f'opset {opset} < 11 (NonMaxSuppression, ScatterND '
                         'and TopK need opset 11)')
    model = model.to(device).eval()
    images = torch.rand(batch_size, 3, height, width, device=device)
    if fp16:
        model, images = model.half(), images.half()
    axes = dynamic_axes_of(dynamic, nms)
    out_dir = osp.dirname(osp.abspath(out_file))
    os.makedirs(out_dir, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter: torch.export's cannot name custom ops
        # (EfficientNMS_TRT) without onnxscript
        warnings.simplefilter('ignore', DeprecationWarning)
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        torch.onnx.export(
            model, (images, ),
            out_file,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(model.output_names),
            dynamic_axes=axes,
            do_constant_folding=True)
    onnx_model = onnx.load(out_file)
    if nms != 'trt':  # the checker does not know the TensorRT plugin
        onnx.checker.check_model(onnx_model)
    if simplify:
        onnx_model = simplify_onnx(onnx_model)
    metadata = dict(
        nms=nms,
        stride=model.stride,
        img_size=[height, width],
        batch_size=batch_size,
        dynamic=dynamic,
        fp16=fp16,
        num_classes=model.num_classes,
        class_names=list(class_names) if class_names else None,
        input='RGB, [0, 1], letterboxed (pad value 114 / 255)',
        conf_thres=conf_thres if nms != 'none' else None,
        iou_thres=iou_thres if nms != 'none' else None,
        max_det=max_det if nms != 'none' else None)
    entry = onnx_model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save(onnx_model, out_file)
    return out_file


def read_metadata(onnx_file: str) -> dict:
    """The export settings stored in an ONNX file by :func:`export_onnx`
    (empty for a file exported otherwise)."""
    import onnx
    model = onnx.load(onnx_file, load_external_data=False)
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    return {}


def simplify_onnx(onnx_model):
    """The graph simplified by onnxslim, else onnxsim; unchanged (with a
    warning) when neither is installed or simplification fails."""
    try:
        import onnxslim
        return onnxslim.slim(onnx_model)
    except ImportError:
        pass
    except Exception as error:  # keep the valid unsimplified graph
        warnings.warn(f'onnxslim failed ({error}); graph left unsimplified')
        return onnx_model
    try:
        import onnxsim
    except ImportError:
        warnings.warn('--simplify: neither onnxslim nor onnxsim is installed '
                      '(pip install onnxslim); graph left unsimplified')
        return onnx_model
    simplified, ok = onnxsim.simplify(onnx_model)
    if not ok:
        warnings.warn('onnxsim could not check the simplified graph; '
                      'graph left unsimplified')
        return onnx_model
    return simplified
