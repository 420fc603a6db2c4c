"""YOLOv7 detection head: official raw outputs, MMYOLO decoding and NMS."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
from mmdet.structures import SampleList
from mmdet.structures.bbox import get_box_tensor
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig
from mmengine.structures import InstanceData
from mmyolo.models.dense_heads import YOLOv5Head
from mmyolo.registry import TASK_UTILS as MMYOLO_TASK_UTILS
from torch import Tensor

from mmyolo_ext.registry import MODELS


@MODELS.register_module()
class IDetectHead(YOLOv5Head):
    """The YOLOv7 head (IDetect, and IAuxDetect with an auxiliary head).

    :meth:`forward` returns the raw per-level maps ``(bs, na * (5 + nc), ny,
    nx)`` of :class:`IDetectHeadModule` in the official channel order, so
    ``model(inputs, mode='tensor')`` is the official raw output. Prediction
    splits them into box / objectness / class maps and reuses MMYOLO's
    :meth:`YOLOv5Head.predict_by_feat`: ``YOLOAnchorGenerator`` priors with
    ``YOLOv5BBoxCoder`` give the official decoding ``xy = (2 sigmoid(t) - 0.5
    + grid) * stride``, ``wh = (2 sigmoid(t))^2 * anchor``, followed by
    (multi-label) NMS and undoing the letterbox. Only the lead maps are used
    for prediction. Scores are objectness * class probability, or the
    objectness alone for a one-class model, as in the official NMS.

    The loss is a separate module (``loss``, e.g. ``ComputeLossOTA``) built
    with ``num_classes``, ``anchors`` (per level ``[w, h]`` pixel pairs) and
    ``strides`` from this head; it receives the maps as ``(bs, na, ny, nx, 5
    + nc)`` tensors (lead, then auxiliary levels), the ground truths as
    ``(n, 6)`` rows ``[image, class, cx, cy, w, h]`` normalized by the batch
    input width and height, and the batch input ``(height, width)``.

    Args:
        head_module (dict): Config of :class:`IDetectHeadModule`.
        prior_generator (dict): Anchor generator config (pixel anchors).
        bbox_coder (dict): Box coder config.
        loss (dict, optional): Loss module config; None for a head that is
            only used for inference.
        train_cfg (dict, optional): Training config (unused).
        test_cfg (dict, optional): Post-processing config of
            :meth:`YOLOv5Head.predict_by_feat`.
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
        # YOLOv5Head.__init__ would build YOLOv5's own losses; only its
        # prediction attributes are set up here.
        BaseDenseHead.__init__(self, init_cfg=init_cfg)
        self.head_module = MODELS.build(head_module)
        self.num_classes = self.head_module.num_classes
        self.featmap_strides = list(self.head_module.featmap_strides)
        self.num_levels = len(self.featmap_strides)
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg

        # MMYOLO's registry: the defaults name MMYOLO / MMDetection utilities
        self.prior_generator = MMYOLO_TASK_UTILS.build(prior_generator)
        self.bbox_coder = MMYOLO_TASK_UTILS.build(bbox_coder)
        generator_strides = [
            int(s[0]) if isinstance(s, (tuple, list)) else int(s)
            for s in self.prior_generator.strides
        ]
        if generator_strides != [int(s) for s in self.featmap_strides]:
            raise ValueError(
                f'prior_generator strides {generator_strides} differ from '
                f'the head module featmap_strides {self.featmap_strides}')
        self.num_base_priors = self.prior_generator.num_base_priors[0]
        if self.num_base_priors != self.head_module.num_base_priors:
            raise ValueError(
                f'prior_generator has {self.num_base_priors} anchors per '
                f'cell, the head module {self.head_module.num_base_priors}')
        self.featmap_sizes = [torch.empty(1)] * self.num_levels
        self.anchors = [[[float(w), float(h)] for w, h in level]
                        for level in self.prior_generator.base_sizes]
        # the anchors are model state: saved in checkpoints (autoanchor may
        # have changed them) and pushed to the priors and the loss on load
        self.register_buffer('anchor_sizes',
                             torch.tensor(self.anchors, dtype=torch.float32))
        self.register_load_state_dict_post_hook(
            IDetectHead._anchors_loaded)

        self.loss_module = None
        if loss is not None:
            self.loss_module = MODELS.build(
                loss,
                default_args=dict(
                    num_classes=self.num_classes,
                    anchors=self.anchors,
                    strides=[int(s) for s in self.featmap_strides]))

    def set_anchors(self, anchors: Union[Tensor, Sequence]) -> None:
        """Use other anchors everywhere: ``anchor_sizes``, ``anchors``, the
        prior generator (prediction, decoding) and the loss.

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
        self._apply_anchors(anchors.cpu())

    def _apply_anchors(self, anchors: Tensor) -> None:
        self.anchors = anchors.tolist()
        generator = self.prior_generator
        generator.base_sizes = [[(w, h) for w, h in level]
                                for level in self.anchors]
        generator.base_anchors = generator.gen_base_anchors()
        self.featmap_sizes = [torch.empty(1)] * self.num_levels  # no cache
        if self.loss_module is not None:
            self.loss_module.set_anchors(anchors)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args,
                              **kwargs) -> None:
        # checkpoints from before anchors were saved keep the config's
        state_dict.setdefault(prefix + 'anchor_sizes', self.anchor_sizes)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @staticmethod
    def _anchors_loaded(module: 'IDetectHead', incompatible_keys) -> None:
        anchors = module.anchor_sizes
        if not anchors.is_meta and anchors.tolist() != module.anchors:
            module._apply_anchors(anchors.detach().float().cpu())

    def forward(self, x: Sequence[Tensor]) -> List[Tensor]:
        """Raw per-level maps ``(bs, na * (5 + nc), ny, nx)``, lead first."""
        return self.head_module(x)

    def split_raw_maps(
        self, raw_maps: Sequence[Tensor]
    ) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """Split raw maps into the class, box and objectness maps that
        :meth:`YOLOv5Head.predict_by_feat` takes."""
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

        Uses the same priors and box coder as prediction. Rows are ordered
        by level, then cell (row-major), then anchor.

        Returns:
            tuple[Tensor, Tensor]: ``(bs, N, 4)`` boxes ``(x1, y1, x2, y2)``
            in input pixels and ``(bs, N, 1 + nc)`` sigmoid objectness and
            class scores; a detection's score is objectness * class score.
            With one class the class score is 1 (the official one-class
            scoring by objectness alone, see :meth:`scoring_class_logits`).
        """
        raw_maps = raw_maps[:self.num_levels]
        cls_scores, bbox_preds, objectnesses = self.split_raw_maps(raw_maps)
        featmap_sizes = [m.shape[2:] for m in raw_maps]
        level_priors = self.prior_generator.grid_priors(
            featmap_sizes,
            dtype=raw_maps[0].dtype,
            device=raw_maps[0].device)
        priors = torch.cat(level_priors)
        # sized like the priors, not by Python ints: an ONNX trace keeps
        # the map sizes symbolic (export with a dynamic input size)
        strides = torch.cat([
            torch.full_like(level[:, 0], stride)
            for level, stride in zip(level_priors, self.featmap_strides)
        ])
        bs = raw_maps[0].shape[0]

        def flatten(maps, channels):
            return torch.cat([
                m.permute(0, 2, 3, 1).reshape(bs, -1, channels) for m in maps
            ], dim=1)

        boxes = self.bbox_coder.decode(priors[None], flatten(bbox_preds, 4),
                                       strides)
        scores = torch.cat([
            flatten(objectnesses, 1),
            flatten(self.scoring_class_logits(cls_scores), self.num_classes)
        ], dim=-1).sigmoid()
        return boxes, scores

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
                        objectnesses: Optional[List[Tensor]] = None,
                        batch_img_metas: Optional[List[dict]] = None,
                        cfg: OptConfigType = None,
                        rescale: bool = True,
                        with_nms: bool = True) -> List[InstanceData]:
        """:meth:`YOLOv5Head.predict_by_feat` with the official scores: the
        class maps go through :meth:`scoring_class_logits` (objectness
        alone for a one-class model)."""
        if objectnesses is not None:
            cls_scores = self.scoring_class_logits(cls_scores)
        return super().predict_by_feat(
            cls_scores,
            bbox_preds,
            objectnesses,
            batch_img_metas=batch_img_metas,
            cfg=cfg,
            rescale=rescale,
            with_nms=with_nms)

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
                h]``, normalized by the input width (x, w) and height (y, h).
            input_hw (tuple[int, int]): Batch input height and width.
        """
        if self.loss_module is None:
            raise RuntimeError('IDetectHead was built without a loss config '
                               '(bbox_head.loss); it can only predict')
        preds = [self.to_official_layout(m) for m in raw_maps]
        return self.loss_module(preds, targets, input_hw)

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
            num_imgs = len(img_metas)
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
            num_imgs = len(batch_data_samples)
        self._check_targets(img_ids, labels, boxes, num_imgs)
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

    def _check_targets(self, img_ids: Tensor, labels: Tensor, boxes: Tensor,
                       num_imgs: int) -> None:
        """Raise a clear error for a ground truth the loss cannot use."""
        bad_label = (labels < 0) | (labels >= self.num_classes) | (
            labels != labels.round())
        bad_box = ~torch.isfinite(boxes).all(1) | (
            boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        bad_img = (img_ids < 0) | (img_ids >= num_imgs)
        for name, bad in (('class id', bad_label), ('box', bad_box),
                          ('image index', bad_img)):
            if bad.any():
                row = int(bad.nonzero()[0])
                img = img_ids[row].item()
                box_in_img = int((img_ids[:row] == img_ids[row]).sum())
                raise ValueError(
                    f'invalid ground truth {name}: image {img:g}, box '
                    f'{box_in_img} (row {row} of the batch): class id '
                    f'{labels[row].item():g}, box '
                    f'(x1, y1, x2, y2) {boxes[row].tolist()}; expected class '
                    f'ids in [0, {self.num_classes}), finite boxes with x2 >= '
                    f'x1 and y2 >= y1, image indices in [0, {num_imgs})')
