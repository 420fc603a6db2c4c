"""YOLOv7 detection head: official raw outputs, MMYOLO decoding and NMS."""
from typing import List, Sequence, Tuple, Union

import copy

import torch
from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
from mmdet.models.utils import filter_scores_and_topk
from mmdet.structures import SampleList
from mmdet.structures.bbox import get_box_tensor
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig
from mmengine.structures import InstanceData
from mmyolo.registry import TASK_UTILS as MMYOLO_TASK_UTILS
from torch import Tensor

from mmyolo_ext.registry import MODELS
from ..losses.compute_loss_ota import build_assigner

# the train_cfg keys of the assigners handed to the loss
_ASSIGNER_KEYS = ('assigner', 'aux_assigner')


def select_top_scores(scores: Tensor, score_thr: float, nms_pre: int,
                      multi_label: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """The best ``nms_pre`` detections above ``score_thr`` of ``(N, nc)``
    scores (mmdet's ``filter_scores_and_topk``): every class of a box with
    ``multi_label``, else its best class. Returns their scores, labels and
    box indices."""
    if multi_label:
        scores, labels, keep, _ = filter_scores_and_topk(
            scores, score_thr, nms_pre)
        return scores, labels, keep
    scores, labels = scores.max(1, keepdim=True)
    scores, _, keep, kept = filter_scores_and_topk(
        scores, score_thr, nms_pre, results=dict(labels=labels[:, 0]))
    return scores, kept['labels'], keep


def undo_letterbox(bboxes: Tensor, img_meta: dict) -> None:
    """Take input-pixel boxes back to the original image in place: remove
    the letterbox padding (``pad_param``: top, bottom, left, right), then
    the resize (``scale_factor``)."""
    pad_param = img_meta.get('pad_param')
    if pad_param is not None:
        bboxes -= bboxes.new_tensor(
            [pad_param[2], pad_param[0], pad_param[2], pad_param[0]])
    bboxes /= bboxes.new_tensor(img_meta['scale_factor']).repeat((1, 2))


def clip_to_original(bboxes: Tensor, img_meta: dict) -> None:
    """Clip boxes to the original image (``ori_shape``) in place."""
    height, width = img_meta['ori_shape'][:2]
    bboxes[:, 0::2].clamp_(0, width)
    bboxes[:, 1::2].clamp_(0, height)


def cell_grid(ny, nx, dtype: torch.dtype,
              device: torch.device) -> Tuple[Tensor, Tensor]:
    """The column and the row of each cell of an ``ny x nx`` map, cells
    row-major (two ``(ny * nx,)`` tensors of ``dtype``).

    The ranges are made in the default dtype, then cast, and repeated rather
    than meshgridded: an ONNX trace keeps the sizes symbolic (export with a
    dynamic input size).
    """
    cols = torch.arange(0, nx, device=device).to(dtype)
    rows = torch.arange(0, ny, device=device).to(dtype)
    return (cols.repeat(rows.shape[0]),
            rows.view(-1, 1).repeat(1, cols.shape[0]).view(-1))


@MODELS.register_module()
class IDetectHead(BaseDenseHead):
    """The YOLOv7 head (IDetect, and IAuxDetect with an auxiliary head).

    :meth:`forward` returns the raw per-level maps ``(bs, na * (5 + nc), ny,
    nx)`` of :class:`IDetectHeadModule` in the official channel order, so
    ``model(inputs, mode='tensor')`` is the official raw output.
    :meth:`decode` gives the official decoding ``xy = (2 sigmoid(t) - 0.5 +
    grid) * stride``, ``wh = (2 sigmoid(t))^2 * anchor`` (``YOLOv5BBoxCoder``
    on anchor priors), and :meth:`predict_by_feat` thresholds it, runs
    (multi-label) NMS and undoes the letterbox, as MMYOLO's ``YOLOv5Head``.
    Only the lead maps are used for prediction. Scores are objectness *
    class probability, or the objectness alone for a one-class model, as in
    the official NMS.

    The head stands on ``BaseDenseHead`` rather than MMYOLO's ``YOLOv5Head``:
    ``YOLOv5Head.__init__`` builds YOLOv5's loss modules and a second anchor
    copy (``priors_base_sizes``), and its ``predict_by_feat`` caches priors
    between calls; here the anchors are one buffer, ``anchor_sizes``
    (saved in checkpoints, changed in place by :meth:`set_anchors`), that
    the priors, the decoding and the loss read each time they run.

    The loss is a separate module (``loss``, e.g. ``ComputeLossOTA``) built
    with ``num_classes`` and ``strides`` from this head and the assigners
    built from ``train_cfg``; it receives the maps
    as ``(bs, na, ny, nx, 5 + nc)`` tensors (lead, then auxiliary levels),
    the ground truths as ``(n, 6)`` rows ``[image, class, cx, cy, w, h]``
    normalized by the batch input width and height, the batch input
    ``(height, width)`` and the anchors; it validates the ground truths.

    Args:
        head_module (dict): Config of :class:`IDetectHeadModule`.
        prior_generator (dict): MMDetection's ``YOLOAnchorGenerator`` config:
            ``base_sizes`` (per level ``(w, h)`` pixel anchors, the initial
            ``anchor_sizes``) and ``strides``.
        bbox_coder (dict): Box coder config.
        loss (dict, optional): Loss module config; None for a head that is
            only used for inference.
        train_cfg (dict, optional): Training config: ``assigner`` (lead
            head) and ``aux_assigner`` (auxiliary head), TASK_UTILS configs
            built here and handed to the loss (plain type names are ours,
            whatever the default scope); the loss's defaults,
            ``SimOTAAssigner`` and ``V7AuxAssigner``, where absent. The
            detector passes its ``train_cfg`` here.
        test_cfg (dict, optional): Post-processing config of
            :meth:`predict_by_feat` (MMYOLO's keys: ``multi_label``,
            ``score_thr``, ``nms_pre``, ``nms``, ``max_per_img``).
        init_cfg (dict or list[dict], optional): Initialization config.
    """

    def __init__(self,
                 head_module: ConfigType,
                 prior_generator: ConfigType = dict(
                     type='mmdet.YOLOAnchorGenerator',
                     base_sizes=[[(12, 16), (19, 36), (40, 28)],
                                 [(36, 75), (76, 55), (72, 146)],
                                 [(142, 110), (192, 243), (459, 401)]],
                     strides=[8, 16, 32]),
                 bbox_coder: ConfigType = dict(type='YOLOv5BBoxCoder'),
                 loss: OptConfigType = None,
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.head_module = MODELS.build(head_module)
        self.num_classes = self.head_module.num_classes
        self.featmap_strides = [int(s) for s in
                                self.head_module.featmap_strides]
        self.num_levels = len(self.featmap_strides)
        self.num_base_priors = self.head_module.num_base_priors
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self.bbox_coder = MMYOLO_TASK_UTILS.build(bbox_coder)

        generator_type = prior_generator.get('type', '').split('.')[-1]
        if generator_type != 'YOLOAnchorGenerator':
            raise ValueError('prior_generator must be a YOLOAnchorGenerator '
                             f'config, got {prior_generator}')
        generator_strides = [
            int(s[0]) if isinstance(s, (tuple, list)) else int(s)
            for s in prior_generator['strides']
        ]
        if generator_strides != self.featmap_strides:
            raise ValueError(
                f'prior_generator strides {generator_strides} differ from '
                f'the head module featmap_strides {self.featmap_strides}')
        # what the config said, never updated (the weights converter
        # compares a checkpoint's anchors with it, also on a 'meta' model)
        self.config_anchors = tuple(
            tuple((float(w), float(h)) for w, h in level)
            for level in prior_generator['base_sizes'])
        anchors = torch.tensor(self.config_anchors, dtype=torch.float32)
        if anchors.shape[1] != self.num_base_priors:
            raise ValueError(
                f'prior_generator has {anchors.shape[1]} anchors per cell, '
                f'the head module {self.num_base_priors}')
        # the one anchor state (levels, anchors, w/h pixels): a checkpoint
        # carries it (autoanchor may have changed it)
        self.register_buffer('anchor_sizes', anchors)

        self.loss_module = None
        if loss is not None:
            moved = [key for key in _ASSIGNER_KEYS if key in loss]
            if moved:
                raise ValueError(
                    f'bbox_head.loss.{moved[0]} has moved to '
                    f'model.train_cfg.{moved[0]} (the detector hands '
                    'model.train_cfg to the head as its train_cfg, which '
                    'builds the assigners, as mmdet heads do)')
            # the loss's defaults (SimOTA, V7Aux) for those not given
            assigners = {
                key: build_assigner(cfg)
                for key, cfg in (train_cfg or {}).items()
                if key in _ASSIGNER_KEYS
            }
            self.loss_module = MODELS.build(
                loss,
                default_args=dict(
                    num_classes=self.num_classes,
                    strides=self.featmap_strides,
                    **assigners))

    @property
    def anchors(self) -> List[List[List[float]]]:
        """The anchors as per level ``[w, h]`` pixel pairs (read-only)."""
        return self.anchor_sizes.tolist()

    def set_anchors(self, anchors: Union[Tensor, Sequence]) -> None:
        """Use other anchors (autoanchor): prediction, decoding and loss
        read them from ``anchor_sizes`` when they run.

        Args:
            anchors (Tensor | Sequence): ``(levels, anchors per level, 2)``
                ``[w, h]`` pairs in pixels, the shape of the current ones.
        """
        anchors = torch.as_tensor(anchors, dtype=torch.float32).detach()
        if anchors.shape != self.anchor_sizes.shape:
            raise ValueError(
                f'anchors of shape {tuple(anchors.shape)} for a head with '
                f'{tuple(self.anchor_sizes.shape)} (levels, anchors, w/h)')
        if not torch.isfinite(anchors).all() or (anchors <= 0).any():
            raise ValueError(f'anchors must be positive, got '
                             f'{anchors.tolist()}')
        # in place: an EMA copy or a checkpoint swap may hold this tensor
        self.anchor_sizes.copy_(anchors.to(self.anchor_sizes.device))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args,
                              **kwargs) -> None:
        # checkpoints from before anchors were saved keep the config's
        state_dict.setdefault(prefix + 'anchor_sizes', self.anchor_sizes)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def grid_priors(self, featmap_sizes: Sequence[Tuple[int, int]],
                    dtype: torch.dtype,
                    device: torch.device) -> List[Tensor]:
        """Per level the ``(ny * nx * na, 4)`` xyxy anchor boxes centred on
        the cells (row-major cells, then anchors), from ``anchor_sizes``.

        The arithmetic of MMDetection's ``YOLOAnchorGenerator.grid_priors``
        (anchor boxes around ``stride / 2``, shifted by ``cell * stride``).
        """
        priors = []
        for (ny, nx), stride, sizes in zip(featmap_sizes,
                                           self.featmap_strides,
                                           self.anchor_sizes.to(device)):
            centre, half = 0.5 * stride, 0.5 * sizes
            base = torch.cat([centre - half, centre + half], 1).to(dtype)
            xx, yy = (c * stride for c in cell_grid(ny, nx, dtype, device))
            shifts = torch.stack([xx, yy, xx, yy], dim=-1)
            priors.append((base[None] + shifts[:, None]).view(-1, 4))
        return priors

    def forward(self, x: Sequence[Tensor]) -> List[Tensor]:
        """Raw per-level maps ``(bs, na * (5 + nc), ny, nx)``, lead first."""
        return self.head_module(x)

    def split_raw_maps(
        self, raw_maps: Sequence[Tensor]
    ) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """Split raw maps into the class, box and objectness maps that
        :meth:`predict_by_feat` takes (MMYOLO's ``YOLOv5Head`` layout)."""
        cls_scores, bbox_preds, objectnesses = [], [], []
        for raw in raw_maps:
            bs, _, ny, nx = raw.shape
            raw = raw.view(bs, self.num_base_priors, -1, ny, nx)
            bbox_preds.append(raw[:, :, :4].reshape(bs, -1, ny, nx))
            objectnesses.append(raw[:, :, 4:5].reshape(bs, -1, ny, nx))
            cls_scores.append(raw[:, :, 5:].reshape(bs, -1, ny, nx))
        return cls_scores, bbox_preds, objectnesses

    def to_official_layout(self, raw: Tensor) -> Tensor:
        """``(bs, na * no, ny, nx)`` -> ``(bs, na, ny, nx, no)``, a view.

        No copy: the loss reads the few matched cells and the objectness
        channel straight from the conv output, and copying every map costs
        more than the whole loss (bs 16 at 640: 125 ms against 7 ms).
        """
        bs, _, ny, nx = raw.shape
        return raw.view(bs, self.num_base_priors, -1, ny,
                        nx).permute(0, 1, 3, 4, 2)

    def decode(self, raw_maps: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        """Decode the lead maps without thresholds or NMS.

        Rows are ordered by level, then cell (row-major), then anchor.

        Returns:
            tuple[Tensor, Tensor]: ``(bs, N, 4)`` boxes ``(x1, y1, x2, y2)``
            in input pixels and ``(bs, N, 1 + nc)`` sigmoid objectness and
            class scores; a detection's score is objectness * class score.
            With one class the class score is 1 (the official one-class
            scoring by objectness alone, see :meth:`scoring_class_logits`).
        """
        cls_scores, bbox_preds, objectnesses = self.split_raw_maps(
            raw_maps[:self.num_levels])
        boxes, objectness, class_scores = self._decode_split(
            cls_scores, bbox_preds, objectnesses)
        return boxes, torch.cat([objectness[..., None], class_scores], -1)

    def _decode_split(
            self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor],
            objectnesses: Sequence[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """Boxes ``(bs, N, 4)`` (input pixels, xyxy), sigmoid objectness
        ``(bs, N)`` and class scores ``(bs, N, nc)`` of the split lead maps
        (official one-class scoring, see :meth:`scoring_class_logits`)."""
        featmap_sizes = [m.shape[2:] for m in cls_scores]
        level_priors = self.grid_priors(
            featmap_sizes,
            dtype=cls_scores[0].dtype,
            device=cls_scores[0].device)
        priors = torch.cat(level_priors)
        # sized like the priors, not by Python ints: an ONNX trace keeps
        # the map sizes symbolic (export with a dynamic input size)
        strides = torch.cat([
            torch.full_like(level[:, 0], stride)
            for level, stride in zip(level_priors, self.featmap_strides)
        ])
        bs = cls_scores[0].shape[0]

        def flatten(maps, channels):
            return torch.cat([
                m.permute(0, 2, 3, 1).reshape(bs, -1, channels) for m in maps
            ], dim=1)

        boxes = self.bbox_coder.decode(priors[None], flatten(bbox_preds, 4),
                                       strides)
        objectness = flatten(objectnesses, 1)[..., 0].sigmoid()
        class_scores = flatten(
            self.scoring_class_logits(cls_scores), self.num_classes).sigmoid()
        return boxes, objectness, class_scores

    def decode_official(self, raw_maps: Sequence[Tensor]) -> Tensor:
        """Decode the lead maps as the official export (``--grid``) does.

        Returns:
            Tensor: ``(bs, N, 5 + nc)`` rows ``cx, cy, w, h`` in input
            pixels, sigmoid objectness and class scores (1 for a one-class
            model, see :meth:`scoring_class_logits`), level by level and
            within a level in the official order: anchor, row, column.

        The boxes and scores of :meth:`decode` (tested against it and
        against the official formula), computed on each level's channel
        planes before one transpose, instead of on flattened maps whose
        rows are then reordered: the ``--nms none`` graph runs ~6 % faster
        in onnxruntime and ~11 % in OpenVINO INT8 (yolov7-tiny, 640).
        """
        levels = []
        na, no = self.num_base_priors, 5 + self.num_classes
        for raw, stride, sizes in zip(raw_maps[:self.num_levels],
                                      self.featmap_strides,
                                      self.anchor_sizes.to(raw_maps[0])):
            bs, _, ny, nx = raw.shape
            planes = raw.view(bs, na, no, -1).sigmoid()  # cells row-major
            grid = torch.stack(cell_grid(ny, nx, raw.dtype, raw.device))
            xy = (planes[:, :, :2] * 2 - 0.5 + grid) * stride
            wh = (planes[:, :, 2:4] * 2)**2 * sizes.view(1, na, 2, 1)
            scores = planes[:, :, 4:]
            if self.num_classes == 1:  # scored by the objectness alone
                scores = torch.cat(
                    [scores[:, :, :1],
                     torch.ones_like(scores[:, :, 1:])], 2)
            level = torch.cat([xy, wh, scores], 2)  # bs, na, no, cells
            levels.append(level.transpose(2, 3).reshape(bs, -1, no))
        return torch.cat(levels, 1)

    def scoring_class_logits(self,
                             cls_scores: Sequence[Tensor]) -> List[Tensor]:
        """The class logits whose sigmoid multiplies the objectness in a
        detection score.

        With several classes they are the class maps (score = objectness *
        class probability). With one class they are ``+inf`` (sigmoid exactly
        1): the official NMS scores a one-class model by its objectness alone
        (``utils/general.py`` ``non_max_suppression``), since its class
        channel gets no loss and stays untrained.
        """
        if self.num_classes > 1:
            return list(cls_scores)
        return [torch.full_like(cls, float('inf')) for cls in cls_scores]

    def predict_by_feat(self,
                        cls_scores: List[Tensor],
                        bbox_preds: List[Tensor],
                        objectnesses: List[Tensor],
                        batch_img_metas: List[dict],
                        cfg: OptConfigType = None,
                        rescale: bool = True,
                        with_nms: bool = True) -> List[InstanceData]:
        """Detections from the split lead maps (:meth:`split_raw_maps`), as
        MMYOLO's ``YOLOv5Head.predict_by_feat``: drop cells whose objectness
        is at most ``score_thr``, score = objectness * class score, keep the
        best ``nms_pre`` (per class with ``multi_label``), undo the letterbox
        (``pad_param``, ``scale_factor``) when ``rescale``, NMS, clip to the
        original image.

        Args:
            cls_scores (list[Tensor]): Per level ``(bs, na * nc, ny, nx)``.
            bbox_preds (list[Tensor]): Per level ``(bs, na * 4, ny, nx)``.
            objectnesses (list[Tensor]): Per level ``(bs, na, ny, nx)``.
            batch_img_metas (list[dict]): Per image metainfo
                (``ori_shape``, ``scale_factor``, optional ``pad_param``).
            cfg (dict, optional): Post-processing config; ``test_cfg`` when
                None.
            rescale (bool): Boxes in the original image.
            with_nms (bool): Run NMS.

        Returns:
            list[InstanceData]: Per image ``bboxes`` (x1, y1, x2, y2),
            ``scores`` and ``labels``.
        """
        cfg = copy.deepcopy(self.test_cfg if cfg is None else cfg)
        cfg.multi_label = cfg.multi_label and self.num_classes > 1
        all_boxes, all_objectness, all_scores = self._decode_split(
            cls_scores, bbox_preds, objectnesses)
        results_list = []
        for boxes, objectness, scores, img_meta in zip(
                all_boxes, all_objectness, all_scores, batch_img_metas):
            score_thr = cfg.get('score_thr', -1)
            if score_thr > 0 and not cfg.get('yolox_style', False):
                keep = objectness > score_thr
                boxes, scores = boxes[keep], scores[keep]
                objectness = objectness[keep]
            scores = scores * objectness[:, None]
            if scores.shape[0] == 0:
                results_list.append(
                    InstanceData(
                        bboxes=boxes,
                        scores=scores[:, 0],
                        labels=scores[:, 0].int()))
                continue
            scores, labels, keep = select_top_scores(
                scores, score_thr, cfg.get('nms_pre', 100000),
                cfg.multi_label)
            results = InstanceData(
                scores=scores, labels=labels, bboxes=boxes[keep])
            if rescale:
                undo_letterbox(results.bboxes, img_meta)
            if cfg.get('yolox_style', False):
                cfg.max_per_img = len(results)
            results = self._bbox_post_process(
                results=results,
                cfg=cfg,
                rescale=False,
                with_nms=with_nms,
                img_meta=img_meta)
            clip_to_original(results.bboxes, img_meta)
            results_list.append(results)
        return results_list

    def predict(self,
                x: Tuple[Tensor],
                batch_data_samples: SampleList,
                rescale: bool = False) -> List[InstanceData]:
        """Detect objects from the neck features (lead head only).

        Returns:
            list[InstanceData]: Per image ``bboxes`` (x1, y1, x2, y2; in the
            original image when ``rescale``), ``scores`` and ``labels``.
        """
        batch_img_metas = [
            data_samples.metainfo for data_samples in batch_data_samples
        ]
        raw_maps = self(x)[:self.num_levels]
        cls_scores, bbox_preds, objectnesses = self.split_raw_maps(raw_maps)
        return self.predict_by_feat(
            cls_scores,
            bbox_preds,
            objectnesses,
            batch_img_metas=batch_img_metas,
            rescale=rescale)

    def loss(self, x: Tuple[Tensor], batch_data_samples: Union[list,
                                                               dict]) -> dict:
        """Compute the loss from the neck features.

        Args:
            x (tuple[Tensor]): Neck features (lead, then auxiliary levels).
            batch_data_samples (list[DetDataSample] | dict): MMDetection
                data samples (``gt_instances.bboxes`` / ``labels``, metainfo
                ``batch_input_shape``), or MMYOLO's packed batch: a dict with
                ``bboxes_labels`` ``(N, 6)`` rows ``[image, label, x1, y1, x2,
                y2]`` in pixels and ``img_metas``.

        Returns:
            dict: ``loss_box``, ``loss_obj``, ``loss_cls``.
        """
        raw_maps = self(x)
        targets, input_hw = self.targets_from_samples(batch_data_samples,
                                                      raw_maps[0].device)
        return self.loss_by_feat(raw_maps, targets, input_hw)

    def loss_by_feat(self, raw_maps: Sequence[Tensor], targets: Tensor,
                     input_hw: Tuple[int, int]) -> dict:
        """Compute the loss from raw maps and normalized targets.

        Args:
            raw_maps (Sequence[Tensor]): Output of :meth:`forward`.
            targets (Tensor): ``(n, 6)`` rows ``[image, class, cx, cy, w,
                h]``, normalized by the input width (x, w) and height (y, h);
            the loss validates them.
            input_hw (tuple[int, int]): Batch input height and width.
        """
        if self.loss_module is None:
            raise RuntimeError('IDetectHead was built without a loss config '
                               '(bbox_head.loss); it can only predict')
        preds = [self.to_official_layout(m) for m in raw_maps]
        return self.loss_module(preds, targets, input_hw, self.anchor_sizes)

    def targets_from_samples(
            self, batch_data_samples: Union[list, dict],
            device: torch.device) -> Tuple[Tensor, Tuple[int, int]]:
        """Convert ground truths to normalized ``[image, class, cx, cy, w,
        h]`` rows.

        Args:
            batch_data_samples (list[DetDataSample] | dict): See :meth:`loss`.
            device (torch.device): Device of the returned targets.

        Returns:
            tuple[Tensor, tuple[int, int]]: The ``(n, 6)`` targets and the
            batch input ``(height, width)``.
        """
        if isinstance(batch_data_samples, dict):
            img_metas = batch_data_samples.get('img_metas')
            if 'bboxes_labels' not in batch_data_samples or not img_metas:
                raise KeyError('a packed training batch needs '
                               "'bboxes_labels' and 'img_metas', got keys "
                               f'{sorted(batch_data_samples)}')
            input_hw = self._batch_input_shape(img_metas[0])
            packed = batch_data_samples['bboxes_labels'].to(
                device=device, dtype=torch.float32)
            if packed.dim() != 2 or packed.shape[1] != 6:
                raise ValueError('bboxes_labels must be (N, 6) rows [image, '
                                 'label, x1, y1, x2, y2], got shape '
                                 f'{tuple(packed.shape)}')
            img_ids, labels, boxes = packed[:, 0], packed[:, 1], packed[:, 2:]
        else:
            if not batch_data_samples:
                raise ValueError('batch_data_samples is empty')
            input_hw = self._batch_input_shape(
                batch_data_samples[0].metainfo)
            box_list, label_list, id_list = [], [], []
            for i, sample in enumerate(batch_data_samples):
                gt = sample.gt_instances
                img_boxes = get_box_tensor(gt.bboxes).to(
                    device=device, dtype=torch.float32).reshape(-1, 4)
                box_list.append(img_boxes)
                label_list.append(
                    gt.labels.to(device=device, dtype=torch.float32))
                id_list.append(img_boxes.new_full((len(img_boxes), ), i))
            img_ids = torch.cat(id_list)
            labels = torch.cat(label_list)
            boxes = torch.cat(box_list)
        height, width = input_hw
        scale = boxes.new_tensor([width, height])
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2 / scale
        sizes = (boxes[:, 2:] - boxes[:, :2]) / scale
        targets = torch.cat(
            [img_ids[:, None], labels[:, None], centers, sizes], dim=1)
        return targets, input_hw

    @staticmethod
    def _batch_input_shape(metainfo: dict) -> Tuple[int, int]:
        if 'batch_input_shape' not in metainfo:
            raise KeyError('image metainfo has no batch_input_shape (set by '
                           'the data preprocessor); keys: '
                           f'{sorted(metainfo)}')
        height, width = metainfo['batch_input_shape'][:2]
        return int(height), int(width)
