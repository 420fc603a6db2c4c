"""``mmyolo_ext.deploy.reparameterize``: the fused model computes what the
unfused one does, with the official deploy parameter count."""
import pytest
import torch
import torch.nn as nn
from mmdet.structures import DetDataSample
from helpers.official_models import (build_model, load_converted, load_manifest, num_params, official_decoded_order, random_official_state_dict)
from helpers.paths import VECTORS

from mmyolo_ext.deploy import reparameterize
from mmyolo_ext.models.layers import RepConv

TINY_FORWARD = VECTORS / 'tiny_forward.pt'


def randomize_batch_norms(module: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            n = bn.num_features
            bn.weight.data = 0.5 + torch.rand(n, generator=gen)
            bn.bias.data = 0.1 * torch.randn(n, generator=gen)
            bn.running_mean = 0.1 * torch.randn(n, generator=gen)
            bn.running_var = 0.5 + torch.rand(n, generator=gen)


@pytest.mark.parametrize('in_channels,out_channels,stride',
                         [(8, 8, 1), (8, 16, 1), (8, 8, 2)])
def test_repconv_fuses_all_branches(in_channels, out_channels, stride):
    block = RepConv(in_channels, out_channels, stride=stride)
    assert (block.identity_branch is not None) == (
        in_channels == out_channels and stride == 1)
    randomize_batch_norms(block)
    block.eval()
    x = torch.randn(2, in_channels, 9, 9)
    with torch.no_grad():
        expected = block(x)
        block.switch_to_deploy()
        fused = block(x)
    assert isinstance(block.fused_conv, nn.Conv2d)
    assert not hasattr(block, 'dense_branch')
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)


def _compare_fused(model, inputs, atol):
    model.eval()
    with torch.no_grad():
        expected = model(inputs, mode='tensor')
        reparameterize(model)
        fused = model(inputs, mode='tensor')
    assert len(fused) == len(expected)
    for a, b in zip(fused, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)
    return expected


@pytest.mark.skipif(
    not TINY_FORWARD.exists(),
    reason=f'{TINY_FORWARD} (official reference vectors) is not available')
def test_reparameterized_tiny_matches_official_fused_outputs():
    data = torch.load(TINY_FORWARD, weights_only=True)
    official = {
        k: v.float() if v.is_floating_point() else v
        for k, v in data['state_dict_fp16'].items()
    }
    model = build_model('tiny', device='meta')
    assert load_converted(model, official) == []
    torch.set_num_threads(1)
    meta = dict(ori_shape=(320, 320), img_shape=(320, 320),
                batch_input_shape=(320, 320), scale_factor=(1., 1.))
    samples = [DetDataSample(metainfo=meta) for _ in range(2)]
    with torch.no_grad():
        before = model.eval().predict(data['input'], samples)
    _compare_fused(model, data['input'], atol=1e-3)
    with torch.no_grad():
        after = model.predict(data['input'], samples)
    for a, b in zip(after, before):
        # each of the top 20 detections is among the unfused model's top 40
        # (near-tied scores may swap places)
        a, b = a.pred_instances[:20], b.pred_instances[:40]
        for label, box, score in zip(a.labels, a.bboxes, a.scores):
            same = ((b.labels == label)
                    & ((b.bboxes - box).abs().amax(1) < 0.05)
                    & ((b.scores - score).abs() < 1e-4))
            assert same.any()
    assert num_params(model) == load_manifest('tiny',
                                              'deploy')['num_params_fused']
    with torch.no_grad():
        decoded = official_decoded_order(model.bbox_head,
                                         model(data['input'], mode='tensor'))
    torch.testing.assert_close(
        decoded, data['fused_decoded'], rtol=2e-4, atol=1e-3)


@pytest.mark.parametrize('arch,side', [('l', 64), ('w6', 128)])
def test_reparameterized_model_equals_unfused(arch, side):
    manifest = load_manifest(arch, 'training')
    model = build_model(arch, device='meta')
    assert load_converted(model,
                          random_official_state_dict(manifest, seed=3)) == []
    inputs = torch.rand(1, 3, side, side,
                        generator=torch.Generator().manual_seed(4))
    expected = _compare_fused(model, inputs, atol=1e-3)
    assert min(float(e.std()) for e in expected) > 0.1
    assert num_params(model) == load_manifest(arch,
                                              'deploy')['num_params_fused']
    assert not any(isinstance(m, RepConv) and m.fused_conv is None
                   for m in model.modules())
    if manifest['detect_type'] == 'IAuxDetect':
        assert not model.neck.with_aux
        assert not model.bbox_head.head_module.with_aux
    assert model.bbox_head.head_module.implicit_a is None
