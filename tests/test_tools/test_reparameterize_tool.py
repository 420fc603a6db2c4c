"""tools/model_converters/reparameterize.py writes deploy checkpoints that load_detector and
tools/test.py load with no flag and that predict what the training
checkpoint predicts; the EMA weights are the ones it keeps."""
import copy
import os
import pickle
import runpy
import subprocess
import sys
import textwrap

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.hooks import EMAHook
from mmdet.models.layers import ExpMomentumEMA
from helpers.seeded_detector import DEMO_CONFIG, ROOT, seeded_detector

from mmyolo_ext.demo_data import generate_shapes_dataset
from mmyolo_ext.deploy import (is_deploy_checkpoint, load_detector,
                               reparameterize)
from mmyolo_ext.deploy.checkpoint import deploy_checkpoint

TOOL = ROOT / 'tools' / 'model_converters' / 'reparameterize.py'


@pytest.fixture(scope='module')
def demo_model():
    """The seeded demo detector, built once; each test takes a copy."""
    model, _ = seeded_detector()
    return model


def run_tool(*args) -> None:
    argv = sys.argv
    sys.argv = [str(TOOL), *map(str, args)]
    try:
        runpy.run_path(str(TOOL), run_name='__main__')
    finally:
        sys.argv = argv


def predict(model, inputs):
    size = tuple(inputs.shape[-2:])
    meta = dict(ori_shape=size, img_shape=size, batch_input_shape=size,
                scale_factor=(1., 1.))
    samples = [DetDataSample(metainfo=meta) for _ in range(len(inputs))]
    with torch.no_grad():
        return [s.pred_instances for s in model.predict(inputs, samples)]


def assert_same(got, expected, exact=False):
    """Same detections: identical, or (fused against unfused weights) each
    top detection found in the other set up to float32 rounding."""
    for a, b in zip(got, expected):
        assert len(a.scores) > 10
        if exact:
            torch.testing.assert_close(a.bboxes, b.bboxes, rtol=0, atol=1e-4)
            torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-6)
            assert torch.equal(a.labels, b.labels)
            continue
        for i in a.scores.argsort(descending=True)[:20].tolist():
            close = ((b.labels == a.labels[i])
                     & ((b.scores - a.scores[i]).abs() < 1e-4)
                     & ((b.bboxes - a.bboxes[i]).abs().amax(1) < 0.05))
            assert close.any(), (a.scores[i], a.bboxes[i])


def ema_checkpoint(model) -> tuple:
    """A checkpoint as MMEngine's EMAHook saves it, and the EMA model.

    The averaged model starts as a copy; the raw model then moves on, so
    the two predict differently."""
    hook = EMAHook()
    hook.ema_model = ExpMomentumEMA(model, momentum=0.0001, gamma=2000)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # small steps: the head's outputs stay unsaturated
        for param in model.bbox_head.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.01)
    ckpt = dict(
        state_dict=copy.deepcopy(model.state_dict()),
        meta=dict(dataset_meta=dict(classes=('circle', 'rectangle',
                                             'triangle'))))
    hook.before_save_checkpoint(None, ckpt)
    return ckpt, hook.ema_model.module


def test_deploy_checkpoint_keeps_the_ema_weights(tmp_path, demo_model):
    model = copy.deepcopy(demo_model)
    ckpt, ema_module = ema_checkpoint(model)
    torch.save(ckpt, tmp_path / 'train.pth')
    inputs = torch.rand(2, 3, 128, 160, generator=torch.Generator()
                        .manual_seed(2))

    run_tool(DEMO_CONFIG, tmp_path / 'train.pth', tmp_path / 'ema.pth')
    run_tool(DEMO_CONFIG, tmp_path / 'train.pth', tmp_path / 'raw.pth',
             '--weights', 'model')
    saved = torch.load(tmp_path / 'ema.pth', weights_only=False)
    assert is_deploy_checkpoint(saved)
    assert saved['meta']['mmyolo_ext']['weights'] == 'ema'
    assert set(saved) == {'meta', 'state_dict'}  # no EMA / optimizer state
    assert saved['meta']['dataset_meta']['classes'][0] == 'circle'

    deployed = load_detector(str(DEMO_CONFIG), str(tmp_path / 'ema.pth'))
    raw_deployed = load_detector(str(DEMO_CONFIG), str(tmp_path / 'raw.pth'))
    assert deployed.dataset_meta['classes'][2] == 'triangle'
    # the reference: the averaged model itself, fused in the test
    ema_fused = reparameterize(copy.deepcopy(ema_module))
    raw_fused = reparameterize(copy.deepcopy(model))
    assert_same(predict(deployed, inputs), predict(ema_fused, inputs),
                exact=True)
    assert_same(predict(raw_deployed, inputs), predict(raw_fused, inputs),
                exact=True)
    assert_same(predict(deployed, inputs), predict(ema_module.eval(), inputs))
    # the two weight sets really differ (the test can tell them apart)
    with torch.no_grad():
        ema_raw = deployed(inputs, mode='tensor')
        raw_raw = raw_deployed(inputs, mode='tensor')
    assert max((a - b).abs().max() for a, b in zip(ema_raw, raw_raw)) > 1e-2


def test_test_tool_loads_a_deploy_checkpoint_without_flag(tmp_path,
                                                         demo_model):
    model = demo_model
    ckpt = tmp_path / 'train.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    run_tool(DEMO_CONFIG, ckpt, tmp_path / 'deploy.pth')

    # the demo's first 4 validation images (image i of a split is drawn
    # from its own seed: the same images as in data/shapes/)
    data_root = str(tmp_path / 'shapes') + '/'
    generate_shapes_dataset(data_root, num_train=0, num_val=4)
    cfg_path = tmp_path / 'small_demo_test.py'
    cfg_path.write_text(textwrap.dedent(f"""
        _base_ = [{str(DEMO_CONFIG)!r}]
        data_root = {data_root!r}
        test_dataloader = dict(
            batch_size=4, num_workers=0, persistent_workers=False,
            dataset=dict(data_root=data_root,
                         generate=dict(num_train=0, num_val=4), indices=4))
        test_evaluator = dict(
            ann_file=data_root + 'annotations/instances_val.json')
        """))
    out = tmp_path / 'pred.pkl'
    # the command line runs while this process computes the reference
    # (it is single-threaded)
    tool = subprocess.Popen(
        [sys.executable, str(ROOT / 'tools' / 'test.py'), str(cfg_path),
         str(tmp_path / 'deploy.pth'), '--out', str(out), '--work-dir',
         str(tmp_path / 'work')],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    try:
        # reference: the unfused training model on the same batch,
        # in-process
        from mmengine.registry import DefaultScope
        from mmengine.runner import Runner
        cfg = Config.fromfile(str(cfg_path))
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            loader = Runner.build_dataloader(cfg.test_dataloader)
            batch = next(iter(loader))
            with torch.no_grad():
                plain = model.test_step(batch)
        log, _ = tool.communicate(timeout=600)
    finally:
        tool.kill()
    assert tool.returncode == 0, log[-3000:]
    assert 'Model re-parameterized for deployment' in log
    assert 'unexpected key' not in log and 'missing keys' not in log
    with open(out, 'rb') as f:
        fused = pickle.load(f)

    assert [p['img_id'] for p in fused] == [p.img_id for p in plain]
    assert_same([_instances(p['pred_instances']) for p in fused],
                [p.pred_instances for p in plain])


def _instances(pred: dict):
    from mmengine.structures import InstanceData
    return InstanceData(**pred)


def test_p6_deploy_checkpoint_drops_the_aux_head():
    """yolov7-w6: the deploy weights (in memory, as the tool makes them)
    have no auxiliary head and predict what the training weights do."""
    config = ROOT / 'configs' / 'yolov7_w6_coco.py'
    model, _ = seeded_detector(config, stats_shape=(128, 128),
                               init_weights=False)
    train_ckpt = dict(state_dict=model.state_dict(), meta=dict())
    fused = load_detector(str(config), train_ckpt, deploy=True)
    saved = deploy_checkpoint(fused, train_ckpt)
    assert any('aux' in k for k in model.state_dict())
    assert not any('aux' in k for k in saved['state_dict'])

    inputs = torch.rand(1, 3, 128, 128,
                        generator=torch.Generator().manual_seed(3))
    deployed = load_detector(str(config), saved)
    assert deployed.dataset_meta['classes'][0] == 'person'  # config's COCO
    assert_same(predict(deployed, inputs), predict(model, inputs))
