"""Training runs of the demo config through tools/: killed mid-epoch and
resumed (same result as an uninterrupted run), and two CPU processes with
tools/dist_train.sh (gloo) that train and evaluate."""
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import mmyolo_ext  # noqa: F401  (lets torch.load read mmengine checkpoints)
from helpers.concurrent_runs import command, run_all
from mmyolo_ext.demo_data import generate_shapes_dataset

from helpers.paths import ROOT
from helpers.paths import TOY
from helpers.toy_modules import KILLED_EXIT_CODE

# the demo's shapes data at 128 px (its images are 320): the behaviours
# tested (resume, launcher, evaluation) are the same at any image size
SHAPES = dict(num_train=16, num_val=8, img_size=128)


@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory) -> str:
    """The data, written once for the runs of both tests."""
    root = str(tmp_path_factory.mktemp('data') / 'shapes') + '/'
    generate_shapes_dataset(root, **SHAPES)
    return root


def small_demo_config(tmp_path: Path, data_root: str, images: int,
                      batch: int, epochs: int, validate: bool) -> Path:
    """The demo config on the first `images` training images, with a
    checkpoint every 3 iterations (and after the last: each checkpoint of
    yolov7-tiny, EMA and Adam state is ~100 MB) and the kill switch of the
    toy modules."""
    val = '' if validate else textwrap.dedent("""
        val_dataloader = None
        val_evaluator = None
        val_cfg = None
        """)
    path = tmp_path / 'small_demo.py'
    path.write_text(textwrap.dedent(f"""
        _base_ = [{str(ROOT / 'configs' / 'yolov7_tiny_demo.py')!r}]
        custom_imports = dict(imports=['mmyolo_ext', 'toy_modules'],
                              allow_failed_imports=False)
        data_root = {data_root!r}
        train_dataloader = dict(
            batch_size={batch}, num_workers=1, persistent_workers=False,
            dataset=dict(data_root=data_root, generate={SHAPES!r},
                         indices={images}))
        val_dataloader = dict(dataset=dict(
            data_root=data_root, generate={SHAPES!r}, indices=8))
        val_evaluator = dict(
            ann_file=data_root + 'annotations/instances_val.json')
        train_cfg = dict(max_epochs={epochs}, val_interval={epochs})
        default_hooks = dict(
            checkpoint=dict(interval=3, by_epoch=False, max_keep_ckpts=10),
            logger=dict(interval=1),
            param_scheduler=dict(max_epochs={epochs}))
        custom_hooks = _base_.custom_hooks + [dict(type='KillAfterIterHook')]
        randomness = dict(seed=0, deterministic=True)
        """) + val)
    return path


def run(args, **env_extra):
    """``args`` as a process: call the result, or start it by
    :func:`run_all` alongside others."""
    env = dict(os.environ, PYTHONPATH=f'{TOY}{os.pathsep}{ROOT}',
               OMP_NUM_THREADS='1', PYTHON=sys.executable, **env_extra)
    return command(args, cwd=ROOT, env=env, timeout=900)


def train_losses(work_dir: Path) -> dict:
    records = {}
    for path in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if 'loss' in record:
                records[record['iter']] = record
    return records


def test_demo_resumed_mid_epoch_ends_like_uninterrupted_run(
        tmp_path, shapes_root):
    """16 images in batches of 4: 4 iterations an epoch, 2 epochs. One run is
    killed after iteration 6 (inside epoch 2) and resumed from its
    iteration-6 checkpoint; the other runs through (at the same time: each
    process is single-threaded). Losses of every iteration and the final
    weights (EMA ones included) agree."""
    cfg = small_demo_config(tmp_path, shapes_root, images=16, batch=4,
                            epochs=2, validate=False)
    stopped, whole = tmp_path / 'stopped', tmp_path / 'whole'
    train = [sys.executable, str(ROOT / 'tools' / 'train.py'), str(cfg)]

    def stop_and_resume():
        killed = run([*train, '--work-dir', str(stopped)], TOY_KILL_AT='6')()
        had_checkpoint = (stopped / 'iter_6.pth').exists()
        return killed, had_checkpoint, run(
            [*train, '--work-dir', str(stopped), '--resume'])()

    (out, had_checkpoint, resumed), whole_out = run_all(
        stop_and_resume, run([*train, '--work-dir', str(whole)]))
    assert out.returncode == KILLED_EXIT_CODE, out.stderr[-3000:]
    assert had_checkpoint
    out = resumed
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert 'resumed epoch: 1, iter: 6' in log
    assert 'skipping its 2 already trained batches' in log
    out = whole_out
    assert out.returncode == 0, out.stderr[-3000:]

    resumed, uninterrupted = train_losses(stopped), train_losses(whole)
    assert sorted(resumed) == sorted(uninterrupted) == list(range(1, 9))
    for it in range(1, 9):
        for key in ('loss', 'loss_box', 'loss_obj', 'loss_cls', 'lr'):
            assert resumed[it][key] == pytest.approx(
                uninterrupted[it][key], rel=1e-5, abs=1e-8), (it, key)
    ends = [torch.load(d / 'iter_8.pth', map_location='cpu')
            for d in (stopped, whole)]
    for part in ('state_dict', 'ema_state_dict'):
        for key, value in ends[1][part].items():
            torch.testing.assert_close(ends[0][part][key], value,
                                       rtol=1e-5, atol=1e-6, msg=part + key)


def test_dist_train_demo_two_cpu_processes(tmp_path, shapes_root):
    """tools/dist_train.sh CONFIG 2 on this CPU machine: gloo, one epoch of
    the demo (16 images), then COCO evaluation."""
    if torch.cuda.is_available():
        pytest.skip('this test covers the machine without CUDA')
    cfg = small_demo_config(tmp_path, shapes_root, images=16, batch=4,
                            epochs=1, validate=True)
    out = run(['bash', str(ROOT / 'tools' / 'dist_train.sh'), str(cfg), '2',
               '--work-dir', str(tmp_path / 'work')],
              PORT='29527', CUDA_VISIBLE_DEVICES='')()
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert 'Distributed training: True' in log
    assert log.count("using the gloo backend instead of 'nccl'") == 2
    # 16 images over 2 ranks in batches of 4: 2 iterations each
    assert 'Epoch(train) [1][2/2]' in log
    assert 'coco/bbox_mAP_50' in log
    assert 'SyncBatchNorm skipped' in log
