"""tools/model_converters/convert_yolov7_weights.py: official checkpoints (pickled model
objects, without the official code) and state dicts of all 7 models, both
kinds, load into our configs."""
import importlib.util
import os
import subprocess
import sys
import types
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from mmengine.runner import load_checkpoint
from helpers.official_models import (ARCH_CFGS, ROOT, build_model,
                                   load_converted, load_manifest,
                                   random_official_state_dict)

from mmyolo_ext.deploy import reparameterize
from mmyolo_ext.deploy.official_weights import (load_official_state_dict,
                                                official_units)
from helpers.tools import load_tool


tool = load_tool('tools/model_converters/convert_yolov7_weights.py')


def meta_state_dict(manifest):
    """The manifest's official keys and shapes, as meta tensors."""
    dtypes = {'torch.float32': torch.float32, 'torch.int64': torch.int64}
    return OrderedDict(
        (key, torch.empty(shape, dtype=dtypes[dtype], device='meta'))
        for key, shape, dtype in manifest['state_dict'])


@pytest.mark.parametrize('kind', ['training', 'deploy'])
@pytest.mark.parametrize('arch', list(ARCH_CFGS))
def test_every_official_model_loads_with_no_missing_keys(arch, kind):
    official = meta_state_dict(load_manifest(arch, kind))
    state_dict, detected, report = tool.detect_and_convert(official)
    assert detected == arch
    model = build_model(arch, device='meta', with_loss=True)  # the config
    result = model.load_state_dict(state_dict, strict=False, assign=True)
    assert result.unexpected_keys == []
    p6 = arch in ('w6', 'e6', 'd6', 'e6e')
    if kind == 'deploy' and p6:
        # a P6 deploy checkpoint has no aux head; only its keys are missing
        # (BatchNorm does not report a missing num_batches_tracked)
        assert sorted(result.missing_keys) == sorted(
            k for k in report.missing_aux
            if not k.endswith('num_batches_tracked'))
        assert result.missing_keys
        assert all('aux_convs' in key for key in result.missing_keys)
    else:
        assert result.missing_keys == []
    assert report.has_implicit == (kind == 'training')
    assert bool(report.filled_identity) == (kind == 'deploy')


def test_units_follow_official_layer_order():
    manifest = load_manifest('l', 'training')
    units = official_units(build_model('l', device='meta'))
    with_weights = [row for row, n in zip(manifest['layers'],
                                          manifest['layer_num_params']) if n]
    assert len(units) == len(with_weights)
    # spot checks of the rule: stem, MP transition, SPPCSPC, RepConv, head
    expected = {
        0: 'backbone.stem.0',
        13: 'backbone.stage2.0.pool_conv',
        14: 'backbone.stage2.0.down_convs.0',
        51: 'neck.sppcspc',
        54: 'neck.top_down_layers.0.lateral_conv',
        102: 'neck.out_convs.0',
        105: 'bbox_head.head_module',
    }
    by_index = {row[0]: unit.path for row, unit in zip(with_weights, units)}
    for index, path in expected.items():
        assert by_index[index] == path


def test_deploy_checkpoint_gets_identity_implicit_layers():
    official = random_official_state_dict(load_manifest('tiny', 'deploy'))
    state_dict, _, report = tool.detect_and_convert(official)
    keys = [k for k in state_dict if k.endswith('.implicit')]
    assert sorted(keys) == sorted(report.filled_identity) and len(keys) == 6
    for key in keys:
        expected = 0. if 'implicit_a' in key else 1.
        assert (state_dict[key] == expected).all()
    assert report.anchors_match is True


def test_wrong_checkpoint_is_reported_clearly():
    official = meta_state_dict(load_manifest('l', 'training'))
    with pytest.raises(ValueError, match='fits no YOLOv7 architecture'):
        # one backbone conv less: no architecture fits
        tool.detect_and_convert(
            OrderedDict((k, v) for k, v in official.items()
                        if not k.startswith('model.5.')))
    with pytest.raises(ValueError, match="not an official YOLOv7 key"):
        tool.detect_and_convert({'backbone.conv.weight': torch.empty(1)})


def _official_model_object(state_dict, module_names):
    """Build an object tree like the official pickled model (classes of
    fake ``models.*`` modules), holding ``state_dict``."""
    modules = {}
    for name in module_names:
        module = types.ModuleType(name)
        sys.modules[name] = module
        modules[name] = module
    for cls_name in ('Model', 'Conv', 'IDetect', 'Placeholder'):
        owner = modules['models.yolo' if cls_name in (
            'Model', 'IDetect') else 'models.common']
        setattr(owner, cls_name,
                type(cls_name, (nn.Module, ), {'__module__': owner.__name__}))
    root = modules['models.yolo'].Model()
    for key, tensor in state_dict.items():
        *path, name = key.split('.')
        node = root
        for part in path:
            if not hasattr(node, part):
                cls = modules['models.common'].Placeholder
                node.add_module(part, cls())
            node = getattr(node, part)
        if name in ('weight', 'bias', 'implicit'):
            node.register_parameter(name, nn.Parameter(tensor.clone()))
        else:
            node.register_buffer(name, tensor.clone())
    return root


def test_official_checkpoint_loads_without_official_code(tmp_path):
    official = random_official_state_dict(load_manifest('tiny', 'training'))
    names = ['models', 'models.yolo', 'models.common']
    try:
        model_object = _official_model_object(official, names)
        checkpoint = dict(
            epoch=-1,
            best_fitness=None,
            training_results=None,
            model=model_object.half(),
            ema=None,
            optimizer=None)
        src = tmp_path / 'yolov7-tiny_training.pt'
        torch.save(checkpoint, src)
    finally:
        for name in names:
            sys.modules.pop(name, None)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module('models.yolo')
    loaded = load_official_state_dict(str(src))
    assert list(loaded) == list(official)
    for key, tensor in official.items():
        expected = tensor.half() if tensor.is_floating_point() else tensor
        assert torch.equal(loaded[key], expected), key

    dst = tmp_path / 'converted.pth'
    out = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'model_converters' / 'convert_yolov7_weights.py'),
         str(src), str(dst)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1'))  # as the test process
    assert out.returncode == 0, out.stderr
    assert 'tiny (training checkpoint, 80 classes' in out.stdout
    model = build_model('tiny')
    load_checkpoint(model, str(dst), strict=True)
    conv = model.backbone.stem[0].conv.weight
    assert torch.equal(conv, official['model.0.conv.weight'].half().float())


def test_l_state_dict_round_trip_through_the_tool(tmp_path):
    """A random yolov7 (L) state dict: our model loaded in memory and our
    model loaded from the tool's file compute the same outputs."""
    official = random_official_state_dict(load_manifest('l', 'training'),
                                          seed=5)
    src = tmp_path / 'yolov7_state_dict.pt'
    torch.save(official, src)
    checkpoint, arch, report = tool.convert(str(src))
    assert arch == 'l' and report.anchors_match
    dst = tmp_path / 'yolov7_l.pth'
    torch.save(checkpoint, dst)

    in_memory = build_model('l', device='meta')
    assert load_converted(in_memory, official) == []
    from_file = build_model('l')
    load_checkpoint(from_file, str(dst), strict=True)
    inputs = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = in_memory.eval()(inputs, mode='tensor')
        actual = from_file.eval()(inputs, mode='tensor')
    for a, b in zip(actual, expected):
        assert b.std() > 0.1
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def export_official(model, manifest):
    """``model``'s tensors under official keys: the converter's rule run
    backwards (layers with weights, in index order, pair with our units)."""
    indices = [row[0] for row, n in zip(manifest['layers'],
                                        manifest['layer_num_params']) if n]
    units = official_units(model)
    assert len(units) == len(indices)
    ours = model.state_dict()
    exported = OrderedDict()
    for index, unit in zip(indices, units):
        inverse = sorted(((v, k) for k, v in unit.key_map.items() if v),
                         key=lambda pair: -len(pair[0]))
        for key, tensor in ours.items():
            if not key.startswith(unit.path + '.'):
                continue
            sub = key[len(unit.path) + 1:]
            for our_prefix, official_prefix in inverse:
                if sub.startswith(our_prefix + '.'):
                    sub = official_prefix + sub[len(our_prefix):]
                    break
            exported[f'model.{index}.{sub}'] = tensor
    return exported


def test_fused_official_state_dict_loads_as_an_equivalent_model():
    """A state dict of the reference's fused model (Conv+BN folded, RepConv
    as rbr_reparam, implicit folded into the head convs but still stored)
    loads into our trainable structure and computes the same outputs."""
    manifest = load_manifest('l', 'training')
    official = random_official_state_dict(manifest, seed=6)
    reference = build_model('l', device='meta')
    assert load_converted(reference, official) == []
    inputs = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = reference.eval()(inputs, mode='tensor')
    fused = export_official(reparameterize(reference), manifest)
    assert any(k.endswith('rbr_reparam.weight') for k in fused)
    assert not any('.bn.' in k for k in fused)
    fused.update((k, v) for k, v in official.items()
                 if k.endswith(('.implicit', 'anchors', 'anchor_grid')))

    state_dict, arch, report = tool.detect_and_convert(fused)
    assert arch == 'l'
    assert len(report.expanded_fused) == report.num_layers - 1  # all but head
    model = build_model('l', device='meta')
    model.load_state_dict(state_dict, strict=True, assign=True)
    with torch.no_grad():
        actual = model.eval()(inputs, mode='tensor')
    for a, b in zip(actual, expected):
        torch.testing.assert_close(
            a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
