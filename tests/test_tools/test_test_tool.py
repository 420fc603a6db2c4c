"""tools/test.py evaluates a checkpoint, and with --deploy the
re-parameterized model, which must predict what the trained model does."""
import pickle
import runpy
import sys
import textwrap

import torch

from mmyolo_ext.demo_data import generate_shapes_dataset
from helpers.seeded_detector import seeded_detector

from helpers.paths import ROOT


def run_test_tool(monkeypatch, capfd, *args) -> str:
    """tools/test.py with ``args`` as its command line, in this process
    (test_reparameterize_tool runs it as a process); its log."""
    monkeypatch.setattr(sys, 'argv', ['test.py', *map(str, args)])
    monkeypatch.delenv('LOCAL_RANK', raising=False)  # the tool sets it
    runpy.run_path(str(ROOT / 'tools' / 'test.py'), run_name='__main__')
    out = capfd.readouterr()
    return out.out + out.err


def test_deploy_flag_predicts_like_the_unfused_model(tmp_path, monkeypatch,
                                                     capfd):
    # the demo's first 8 validation images (image i of a split is drawn
    # from its own seed: the same images as in data/shapes/)
    data_root = str(tmp_path / 'shapes') + '/'
    generate_shapes_dataset(data_root, num_train=0, num_val=8)
    cfg_path = tmp_path / 'small_demo_test.py'
    cfg_path.write_text(textwrap.dedent(f"""
        _base_ = [{str(ROOT / 'configs' / 'yolov7_tiny_demo.py')!r}]
        data_root = {data_root!r}
        test_dataloader = dict(dataset=dict(
            data_root=data_root, generate=dict(num_train=0, num_val=8),
            indices=8))
        test_evaluator = dict(
            ann_file=data_root + 'annotations/instances_val.json')
        """))
    # trained-looking BatchNorm statistics and implicit values, so that
    # folding them has something to fold
    model, _ = seeded_detector(cfg_path, stats_shape=(320, 320))
    ckpt = tmp_path / 'model.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)

    results = {}
    for deploy in (False, True):
        out = tmp_path / f'pred_deploy{deploy}.pkl'
        log = run_test_tool(monkeypatch, capfd, cfg_path, ckpt, '--out', out,
                            '--work-dir', tmp_path / 'work',
                            *(['--deploy'] if deploy else []))
        assert ('Model re-parameterized for deployment' in log) == deploy
        assert 'coco/bbox_mAP_50' in log
        with open(out, 'rb') as f:
            results[deploy] = pickle.load(f)

    assert len(results[False]) == len(results[True]) == 8
    for plain, fused in zip(results[False], results[True]):
        assert plain['img_id'] == fused['img_id']
        plain, fused = plain['pred_instances'], fused['pred_instances']
        assert len(plain['scores']) > 10
        # every fused top detection is an unfused detection: same label,
        # score and box up to float32 rounding of the folded weights
        # (matched, not ranked: an untrained model's top scores nearly tie)
        top = fused['scores'].argsort(descending=True)[:20]
        for i in top.tolist():
            close = ((plain['labels'] == fused['labels'][i])
                     & ((plain['scores'] - fused['scores'][i]).abs() < 1e-4)
                     & ((plain['bboxes'] - fused['bboxes'][i]).abs().amax(1)
                        < 0.05))
            assert close.any(), (fused['scores'][i], fused['bboxes'][i])
