"""YOLOv7 models: official parameter counts, official tiny outputs, the
head's loss inputs and predictions, backbone options."""
import math

import pytest
import torch
import torch.nn as nn
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from helpers.official_models import (ARCH_CFGS, build_model, load_converted, load_manifest, num_params, official_decoded_order)
from helpers.paths import VECTORS

from mmyolo_ext.deploy import reparameterize
from mmyolo_ext.models.backbones import ELANBackbone
from mmyolo_ext.models.dense_heads import IDetectHeadModule
from mmyolo_ext.registry import MODELS

TINY_FORWARD = VECTORS / 'tiny_forward.pt'
needs_tiny_forward = pytest.mark.skipif(
    not TINY_FORWARD.exists(),
    reason=f'{TINY_FORWARD} (official reference vectors) is not available')


@pytest.mark.parametrize('arch', list(ARCH_CFGS))
def test_parameter_counts_equal_official(arch):
    model = build_model(arch, device='meta')
    assert num_params(model) == load_manifest(arch, 'training')['num_params']
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)
    reparameterize(model)
    assert num_params(model) == load_manifest(
        arch, 'deploy')['num_params_fused']
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.fixture(scope='module')
def tiny_official():
    """The official tiny forward vectors and our tiny model loaded with
    their weights."""
    if not TINY_FORWARD.exists():
        pytest.skip(f'{TINY_FORWARD} (official reference vectors) is not '
                    'available')
    data = torch.load(TINY_FORWARD, weights_only=True)
    official = {
        k: v.float() if v.is_floating_point() else v
        for k, v in data['state_dict_fp16'].items()
    }
    model = build_model('tiny', device='meta')
    assert load_converted(model, official) == []
    return data, model.eval()


def test_tiny_matches_official_outputs(tiny_official):
    data, model = tiny_official
    torch.set_num_threads(1)
    with torch.no_grad():
        raw_maps = model(data['input'], mode='tensor')
    head = model.bbox_head
    assert len(raw_maps) == len(data['eval_raw']) == 3
    for ours, expected in zip(raw_maps, data['eval_raw']):
        torch.testing.assert_close(
            head.to_official_layout(ours), expected, rtol=0, atol=1e-3)
    decoded = official_decoded_order(head, raw_maps)
    torch.testing.assert_close(
        decoded, data['eval_decoded'], rtol=2e-4, atol=1e-3)


def test_predict_official_settings_and_letterbox(tiny_official):
    data, model = tiny_official
    assert model.bbox_head.test_cfg.score_thr == 0.001
    assert model.bbox_head.test_cfg.nms.iou_threshold == 0.65
    assert model.bbox_head.test_cfg.max_per_img == 300
    assert model.bbox_head.test_cfg.multi_label
    # a 200 x 240 (w x h) image letterboxed to 320 x 320: scale 4/3,
    # 26.67 px of padding left and right
    scale = 320 / 240
    pad_x = (320 - 200 * scale) / 2
    meta = dict(
        ori_shape=(240, 200),
        img_shape=(320, 320),
        batch_input_shape=(320, 320),
        scale_factor=(scale, scale),
        pad_param=[0., 0., pad_x, pad_x])
    samples = [DetDataSample(metainfo=meta) for _ in range(2)]
    with torch.no_grad():
        rescaled = model.predict(data['input'], samples, rescale=True)
        # in input coordinates (clamped to the input, not the image)
        input_metas = [
            DetDataSample(metainfo=dict(meta, ori_shape=(320, 320)))
            for _ in range(2)
        ]
        unscaled = model.bbox_head.predict(
            model.extract_feat(data['input']), input_metas, rescale=False)
    for result, raw in zip(rescaled, unscaled):
        pred = result.pred_instances
        assert 0 < len(pred) <= 300
        assert pred.scores.min() >= 0.001
        assert (pred.scores[:-1] >= pred.scores[1:]).all()
        top = raw.scores.argmax()
        expected = (raw.bboxes[top] -
                    torch.tensor([pad_x, 0., pad_x, 0.])) / scale
        expected[0::2] = expected[0::2].clamp(0, 200)
        expected[1::2] = expected[1::2].clamp(0, 240)
        torch.testing.assert_close(pred.bboxes[0], expected)
        assert pred.bboxes[:, 0::2].max() <= 200
        assert pred.bboxes[:, 1::2].max() <= 240


@MODELS.register_module(force=True)
class RecordingYOLOv7Loss(nn.Module):
    """Stands in for the loss: records what the head passes."""

    def __init__(self, num_classes, strides) -> None:
        super().__init__()
        self.init_args = dict(num_classes=num_classes, strides=strides)
        self.calls = []
        self.anchors = []

    def forward(self, preds, targets, input_hw, anchors):
        self.calls.append((preds, targets, input_hw))
        self.anchors.append(anchors.clone())
        total = sum(p.sum() for p in preds) * 0
        return dict(loss_box=total, loss_obj=total, loss_cls=total)


def tiny_head(num_classes=3, recording=True):
    from mmengine.config import Config
    from helpers.paths import ROOT
    cfg = Config.fromfile(
        str(ROOT / 'configs/_base_/models/yolov7_tiny.py')).model.bbox_head
    cfg.head_module.num_classes = num_classes
    if recording:
        cfg.loss = dict(type='mmyolo_ext.RecordingYOLOv7Loss')
    return MODELS.build(cfg)


def test_head_loss_inputs_from_both_batch_formats():
    head = tiny_head()
    assert head.loss_module.init_args == dict(
        num_classes=3, strides=[8, 16, 32])
    height, width = 64, 96  # non-square: each axis by its own size
    feats = [
        torch.randn(2, c, height // s, width // s)
        for c, s in zip([128, 256, 512], [8, 16, 32])
    ]
    boxes = torch.tensor([[10., 20., 30., 60.], [0., 0., 96., 64.],
                          [50., 8., 58., 40.]])
    labels = torch.tensor([2, 0, 1])
    img_ids = torch.tensor([0, 0, 1])
    metas = [dict(batch_input_shape=(height, width))] * 2
    packed = dict(
        bboxes_labels=torch.cat(
            [img_ids[:, None].float(), labels[:, None].float(), boxes], 1),
        img_metas=metas)
    packed_copy = packed['bboxes_labels'].clone()
    samples = []
    for i in range(2):
        sample = DetDataSample(metainfo=metas[i])
        sample.gt_instances = InstanceData(
            bboxes=boxes[img_ids == i], labels=labels[img_ids == i])
        samples.append(sample)
    head.loss(feats, packed)
    head.loss(feats, samples)
    # the packed batch is not modified in place
    assert torch.equal(packed['bboxes_labels'], packed_copy)
    expected = torch.tensor([[0, 2, 20 / 96, 40 / 64, 20 / 96, 40 / 64],
                             [0, 0, 48 / 96, 32 / 64, 1., 1.],
                             [1, 1, 54 / 96, 24 / 64, 8 / 96, 32 / 64]])
    raw_maps = head(feats)
    for preds, targets, input_hw in head.loss_module.calls:
        assert input_hw == (height, width)
        torch.testing.assert_close(targets, expected)
        for pred, raw in zip(preds, raw_maps):
            # (bs, na, ny, nx, 5 + nc), the official layout
            assert pred.shape == (2, 3, raw.shape[2], raw.shape[3], 8)
            torch.testing.assert_close(pred[1, 2, 1, 0],
                                       raw[1, 2 * 8:3 * 8, 1, 0])
    # the loss gets the head's anchors at each call: the config's, then
    # those set later (one anchor state, read when the loss runs)
    config_anchors = torch.tensor(
        [[[10., 13.], [16., 30.], [33., 23.]],
         [[30., 61.], [62., 45.], [59., 119.]],
         [[116., 90.], [156., 198.], [373., 326.]]])
    assert all(
        torch.equal(a, config_anchors) for a in head.loss_module.anchors)
    head.set_anchors(config_anchors * 1.5)
    head.loss(feats, packed)
    assert torch.equal(head.loss_module.anchors[-1], config_anchors * 1.5)


def test_head_loss_with_no_ground_truth():
    head = tiny_head()
    feats = [torch.randn(2, c, 64 // s, 64 // s)
             for c, s in zip([128, 256, 512], [8, 16, 32])]
    metas = [dict(batch_input_shape=(64, 64))] * 2
    samples = [DetDataSample(metainfo=m) for m in metas]
    for sample in samples:
        sample.gt_instances = InstanceData(
            bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    head.loss(feats, samples)
    head.loss(feats, dict(bboxes_labels=torch.zeros(0, 6), img_metas=metas))
    for _, targets, _ in head.loss_module.calls:
        assert targets.shape == (0, 6)


def test_head_loss_rejects_bad_ground_truth():
    """Ground truths are validated once, by the loss, naming the batch row,
    the image and the box's place in it."""
    head = tiny_head(num_classes=3, recording=False)
    feats = [torch.randn(2, c, 64 // s, 64 // s)
             for c, s in zip([128, 256, 512], [8, 16, 32])]
    packed = dict(
        bboxes_labels=torch.tensor([[0., 1., 1., 1., 5., 5.],
                                    [1., 0., 2., 2., 4., 4.],
                                    [1., 3., 2., 2., 4., 4.]]),
        img_metas=[dict(batch_input_shape=(64, 64))] * 2)
    with pytest.raises(ValueError,
                       match=r'row 2 \(image 1\): class id 3.*box 1 of'):
        head.loss(feats, packed)
    packed['bboxes_labels'][2, 1] = 0.
    packed['bboxes_labels'][1, 4] = 1.  # x2 < x1
    with pytest.raises(ValueError,
                       match=r'row 1 \(image 1\): box .*negative.*box 0 of'):
        head.loss(feats, packed)


def test_tiny_training_step_with_the_configured_loss():
    model = build_model('tiny', with_loss=True, num_classes=3)
    model.init_weights()
    model.train()
    inputs = torch.rand(2, 3, 64, 96)
    packed = dict(
        bboxes_labels=torch.tensor([[0., 1., 10., 12., 40., 50.],
                                    [1., 2., 30., 5., 90., 60.]]),
        img_metas=[dict(batch_input_shape=(64, 96))] * 2)
    losses = model.loss(inputs, packed)
    assert set(losses) >= {'loss_box', 'loss_obj', 'loss_cls'}
    total = sum(v.sum() for k, v in losses.items() if k.startswith('loss'))
    assert torch.isfinite(total) and total > 0
    total.backward()
    grad = model.backbone.stem[0].conv.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_p6_training_step_trains_lead_and_aux_heads():
    model = build_model('w6', with_loss=True, num_classes=3)
    model.train()
    inputs = torch.rand(2, 3, 128, 192)
    packed = dict(
        bboxes_labels=torch.tensor([[0., 1., 10., 12., 60., 70.],
                                    [1., 2., 30., 5., 150., 100.]]),
        img_metas=[dict(batch_input_shape=(128, 192))] * 2)
    feats = model.extract_feat(inputs)
    assert len(feats) == 8  # lead levels, then the auxiliary ones
    losses = model.bbox_head.loss(feats, packed)
    model.parse_losses(losses)[0].backward()
    head = model.bbox_head.head_module
    for conv in [head.lead_convs[0], head.aux_convs[0],
                 model.neck.aux_convs[0].conv]:
        assert conv.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert len(model(inputs, mode='tensor')) == 4  # inference: lead only


def test_head_bias_init_lead_and_aux_independent():
    strides = [8, 16, 32, 64]
    module = IDetectHeadModule(
        num_classes=3,
        in_channels=[16] * 4,
        aux_in_channels=[16] * 4,
        featmap_strides=strides)
    module.init_weights()
    bound = 1 / math.sqrt(16)  # PyTorch's default conv bias init range
    for convs in (module.lead_convs, module.aux_convs):
        for conv, stride in zip(convs, strides):
            bias = conv.bias.detach().view(3, 8)
            obj_prior = math.log(8 / (640 / stride)**2)
            cls_prior = math.log(0.6 / (3 - 0.99))
            assert ((bias[:, 4] - obj_prior).abs() <= bound).all()
            assert ((bias[:, 5:] - cls_prior).abs() <= bound).all()
    for lead, aux in zip(module.lead_convs, module.aux_convs):
        assert lead.bias.data_ptr() != aux.bias.data_ptr()
        assert not torch.equal(lead.bias, aux.bias)
        before = aux.bias.detach().clone()
        with torch.no_grad():
            lead.bias.add_(1.)
        assert torch.equal(aux.bias, before)


def test_backbone_frozen_stages_norm_eval_and_out_indices():
    backbone = ELANBackbone(
        arch='tiny', frozen_stages=1, norm_eval=True, out_indices=(1, 4))
    backbone.train()
    for name, param in backbone.named_parameters():
        frozen = name.startswith(('stem.', 'stage1.'))
        assert param.requires_grad != frozen, name
    assert all(not m.training for m in backbone.modules()
               if isinstance(m, nn.BatchNorm2d))
    outs = backbone(torch.rand(1, 3, 64, 64))
    assert [o.shape[1:] for o in outs] == [(64, 16, 16), (512, 2, 2)]
    assert backbone.out_channels == [64, 512]
    act = backbone.stem[0].activate
    assert isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.1


def test_bad_configuration_errors_are_clear():
    with pytest.raises(KeyError, match='unknown arch'):
        ELANBackbone(arch='m')
    model = build_model('w6', device='meta')
    with pytest.raises(ValueError, match='takes 4 backbone levels, got 3'):
        model.neck([torch.empty(1, 1, 1, 1, device='meta')] * 3)


@pytest.mark.parametrize('num_classes, multi_label, rescale',
                         [(3, True, True), (3, False, True),
                          (3, True, False), (1, False, True)])
def test_predict_by_feat_equals_mmyolo_yolov5_head(num_classes, multi_label,
                                                   rescale):
    """Our predict_by_feat (priors from the anchor buffer) gives MMYOLO's
    YOLOv5Head.predict_by_feat (mmdet's YOLOAnchorGenerator priors) on the
    same maps, after set_anchors too; one class: scored by objectness."""
    import copy

    import numpy as np
    from mmengine.config import ConfigDict
    from mmyolo.models.dense_heads import YOLOv5Head
    from mmyolo.registry import TASK_UTILS as MMYOLO_TASK_UTILS
    head = tiny_head(num_classes=num_classes).eval()
    head.test_cfg = ConfigDict(
        multi_label=multi_label, nms_pre=300, score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.65), max_per_img=50)
    gen = torch.Generator().manual_seed(num_classes)
    sizes = [(12, 16), (6, 8), (3, 4)]
    meta = dict(ori_shape=(80, 120), img_shape=(90, 128),
                scale_factor=(128 / 120, 90 / 80),
                pad_param=np.array([3., 3., 0., 0.]))
    for scale in (1.0, 1.37):
        head.set_anchors(torch.tensor(head.config_anchors) * scale)
        cls, box, obj = [], [], []
        for ny, nx in sizes:
            cls.append(torch.randn(1, 3 * num_classes, ny, nx,
                                   generator=gen) * 3)
            box.append(torch.randn(1, 12, ny, nx, generator=gen))
            obj.append(torch.randn(1, 3, ny, nx, generator=gen) * 3)
        ours = head.predict_by_feat(cls, box, obj, batch_img_metas=[meta],
                                    rescale=rescale)[0]
        peer = copy.copy(head)
        peer.prior_generator = MMYOLO_TASK_UTILS.build(
            dict(type='mmdet.YOLOAnchorGenerator', strides=[8, 16, 32],
                 base_sizes=head.anchors))
        peer.featmap_sizes = [torch.empty(1)] * 3
        peer_cls = cls if num_classes > 1 else [
            torch.full_like(c, 50.) for c in cls]  # sigmoid 1: objectness
        theirs = YOLOv5Head.predict_by_feat(
            peer, peer_cls, box, obj, batch_img_metas=[meta],
            rescale=rescale)[0]
        assert len(ours) > 0
        for key in ('bboxes', 'scores', 'labels'):
            torch.testing.assert_close(ours[key], theirs[key])
