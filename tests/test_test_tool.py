"""tools/test.py evaluates a checkpoint, and with --deploy the
re-parameterized model, which must predict what the trained model does."""
import os
import pickle
import sys
import textwrap
from pathlib import Path

import torch

from concurrent_runs import command, run_all
from mmyolo_ext.datasets import generate_shapes_dataset
from seeded_detector import seeded_detector

ROOT = Path(__file__).resolve().parents[1]


def test_deploy_flag_predicts_like_the_unfused_model(tmp_path):
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

    def test_tool(deploy: bool):
        args = [sys.executable, str(ROOT / 'tools' / 'test.py'),
                str(cfg_path), str(ckpt), '--out',
                str(tmp_path / f'pred_deploy{deploy}.pkl'),
                '--work-dir', str(tmp_path / f'work_deploy{deploy}')]
        return command(args + (['--deploy'] if deploy else []), cwd=ROOT,
                       timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))

    # the two evaluations at once (single-threaded processes)
    runs = dict(zip((False, True), run_all(test_tool(False),
                                           test_tool(True))))
    results = {}
    for deploy, run in runs.items():
        log = run.stdout + run.stderr
        assert run.returncode == 0, log[-3000:]
        assert ('Model re-parameterized for deployment' in log) == deploy
        assert 'coco/bbox_mAP_50' in log
        with open(tmp_path / f'pred_deploy{deploy}.pkl', 'rb') as f:
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
