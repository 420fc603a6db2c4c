"""Defects that changed results against the official recipe (issue 10, item
5): one-class scores and the weight initialization. (The scale range and
the validation batches are checked in test_recipe_configs.py.)

Expected values are re-derived here from the official code's semantics:
``utils/general.py`` ``non_max_suppression`` for the scores, PyTorch's own
``nn.Conv2d`` initialization and the official ``initialize_weights`` /
``Detect._initialize_biases`` for the weights.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from helpers.official_models import build_model

NUM_ANCHORS = 3
STRIDES = (8, 16, 32)
INPUT = 64  # pixels; levels of 8x8, 4x4, 2x2 cells
SCORE_THR = 0.001


def random_logits(num_classes: int, seed: int = 0):
    """Per level class, box and objectness logit maps of a 64 px input:
    objectness spread over the threshold, classes mostly unlikely."""
    gen = torch.Generator().manual_seed(seed)
    cls, box, obj = [], [], []
    for stride in STRIDES:
        n = INPUT // stride
        cls.append(torch.randn(1, NUM_ANCHORS * num_classes, n, n,
                               generator=gen) - 2.0)
        box.append(0.5 * torch.randn(1, NUM_ANCHORS * 4, n, n, generator=gen))
        obj.append(3.0 * torch.randn(1, NUM_ANCHORS, n, n, generator=gen))
    return cls, box, obj


def raw_maps_of(cls, box, obj, num_classes: int):
    """The same logits as the head's raw maps, channels per anchor [box,
    obj, cls...]."""
    maps = []
    for c, b, o in zip(cls, box, obj):
        _, _, ny, nx = c.shape
        maps.append(torch.cat([
            b.view(1, NUM_ANCHORS, 4, ny, nx),
            o.view(1, NUM_ANCHORS, 1, ny, nx),
            c.view(1, NUM_ANCHORS, num_classes, ny, nx)
        ], 2).view(1, -1, ny, nx))
    return maps


def official_scores(cls, obj, num_classes: int) -> np.ndarray:
    """Sorted detection scores of the official NMS before suppression:
    candidates with objectness > conf_thres; conf = objectness when nc == 1,
    else objectness * class probability, multi-label, kept when > conf."""
    obj_p = torch.cat([o.flatten() for o in obj]).sigmoid().double()
    cls_p = torch.cat([
        c.view(NUM_ANCHORS, num_classes, -1).permute(0, 2, 1).reshape(
            -1, num_classes) for c in cls
    ]).sigmoid().double()
    # same (anchor, cell) row order for obj_p: objectness maps are (na, ny,
    # nx) per level, like the class rows above
    candidates = obj_p > SCORE_THR
    if num_classes == 1:
        conf = obj_p[candidates, None]
    else:
        conf = cls_p[candidates] * obj_p[candidates, None]
    return np.sort(conf[conf > SCORE_THR].numpy())


@pytest.fixture(scope='module')
def heads():
    out = {}
    for nc in (1, 3):
        head = build_model('tiny', num_classes=nc).bbox_head.eval()
        # no suppression (IoU > 1 never happens): every candidate's score
        head.test_cfg = ConfigDict(multi_label=True, nms_pre=100000,
                                   score_thr=SCORE_THR,
                                   nms=dict(type='nms', iou_threshold=1.0),
                                   max_per_img=100000)
        out[nc] = head
    return out


@pytest.mark.parametrize('num_classes', [1, 3])
def test_prediction_scores_follow_the_official_nms(heads, num_classes):
    """nc == 1: the objectness alone (the class channel is untrained); nc >
    1: objectness * class probability, as before."""
    head = heads[num_classes]
    cls, box, obj = random_logits(num_classes)
    meta = dict(ori_shape=(INPUT, INPUT), img_shape=(INPUT, INPUT),
                scale_factor=(1., 1.), pad_param=np.zeros(4))
    with torch.no_grad():
        result = head.predict_by_feat(cls, box, obj, batch_img_metas=[meta],
                                      rescale=False)[0]
    expected = official_scores(cls, obj, num_classes)
    assert 20 < len(expected) < sum(o.numel() for o in obj) * num_classes
    np.testing.assert_allclose(
        np.sort(result.scores.double().numpy()), expected, rtol=1e-6)
    if num_classes == 1:
        assert (result.labels == 0).all()


@pytest.mark.parametrize('num_classes', [1, 3])
def test_decode_scores_multiply_to_the_official_score(heads, num_classes):
    """decode() (used by export and TTA) gives [objectness, class...] whose
    product is the official score: with one class the class column is 1."""
    head = heads[num_classes]
    cls, box, obj = random_logits(num_classes, seed=1)
    with torch.no_grad():
        _, scores = head.decode(raw_maps_of(cls, box, obj, num_classes))
    obj_p, cls_p = scores[0, :, 0], scores[0, :, 1:]
    product = (cls_p * obj_p[:, None]).double()
    kept = product[obj_p > SCORE_THR]
    expected = official_scores(cls, obj, num_classes)
    np.testing.assert_allclose(
        np.sort(kept[kept > SCORE_THR].numpy()), expected, rtol=1e-6)
    if num_classes == 1:
        assert (cls_p == 1).all()


# --------------------------------------------------------------------------
# initialization


def conv_bound(conv: nn.Conv2d) -> float:
    """PyTorch's default conv init: kaiming_uniform_(a=sqrt(5)), i.e.
    U(-b, b) with b = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + 5))."""
    fan_in = conv.in_channels // conv.groups * math.prod(conv.kernel_size)
    # (plus float32 rounding of the sampled values)
    return math.sqrt(2 / (1 + 5)) * math.sqrt(3 / fan_in) * (1 + 1e-6)


def std_tolerance(n: int) -> float:
    """5 standard errors of a uniform sample's std, relative: the sample
    variance of U(-b, b) has relative standard error sqrt((kurtosis - 1) /
    n) with kurtosis 1.8, and the std half of it."""
    return 5 * 0.5 * math.sqrt(0.8 / n)


@pytest.fixture(scope='module', params=['tiny', 'l'])
def initialized_model(request):
    torch.manual_seed(0)
    model = build_model(request.param)
    model.init_weights()  # as the runner does before training
    return request.param, model


def test_every_conv_keeps_pytorch_default_init(initialized_model):
    arch, model = initialized_model
    convs = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.Conv2d)]
    assert len(convs) > (50 if arch == 'tiny' else 90)
    assert any('pointwise_branch' in name for name, _ in convs) == (
        arch == 'l')  # RepConv branches are covered
    bad = []
    for name, conv in convs:
        weight = conv.weight.detach().double()
        bound = conv_bound(conv)
        expected_std = bound / math.sqrt(3)
        tol = std_tolerance(weight.numel())
        # a plain nn.Conv2d of the same shape: the bound and std derived
        # above are PyTorch's
        plain = nn.Conv2d(conv.in_channels, conv.out_channels,
                          conv.kernel_size, groups=conv.groups,
                          bias=conv.bias is not None).weight.detach().double()
        assert plain.abs().max() <= bound
        assert abs(plain.std().item() / expected_std - 1) < tol
        ratio = weight.std().item() / plain.std().item()
        if weight.abs().max() > bound or abs(ratio - 1) > 2 * tol:
            bad.append(f'{name}: std {ratio:.2f}x a plain nn.Conv2d, max '
                       f'|w| {weight.abs().max():.4f} (bound {bound:.4f})')
        if conv.bias is not None and 'bbox_head' not in name:
            assert conv.bias.abs().max() <= bound, name
    assert not bad, f'{len(bad)} of {len(convs)} convs:\n' + '\n'.join(bad)


def test_batch_norm_and_head_priors_are_official(initialized_model):
    arch, model = initialized_model
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms
    for bn in norms:
        assert (bn.eps, bn.momentum) == (1e-3, 0.03)
        assert (bn.weight == 1).all() and (bn.bias == 0).all()

    # Detect._initialize_biases on top of the default bias U(-b, b)
    head = model.bbox_head.head_module
    nc = head.num_classes
    for conv, stride in zip(head.lead_convs, STRIDES):
        bias = conv.bias.detach().view(NUM_ANCHORS, 5 + nc)
        bound = conv_bound(conv)
        prior = torch.zeros(5 + nc, dtype=bias.dtype)
        prior[4] = math.log(8 / (640 / stride)**2)
        prior[5:] = math.log(0.6 / (nc - 0.99))
        assert ((bias - prior).abs() <= bound).all()
        assert abs((bias - prior).mean().item()) < bound / 2
    # ImplicitA ~ N(0, .02), ImplicitM ~ N(1, .02)
    for implicits, mean in ((head.implicit_a, 0.), (head.implicit_m, 1.)):
        values = torch.cat([m.implicit.flatten() for m in implicits])
        assert abs(values.mean().item() - mean) < 0.005
        assert abs(values.std().item() / 0.02 - 1) < 0.1


def test_init_weights_twice_keeps_the_weights(initialized_model):
    """A second init_weights (e.g. after loading a checkpoint) changes
    nothing, as mmengine's own."""
    _, model = initialized_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # the modules that reset their convs (the model's own init_weights is
    # guarded by mmengine already)
    model.backbone.init_weights()
    model.neck.init_weights()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
