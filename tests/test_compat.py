"""The two mmengine 0.10.7 breakages on torch>=2.6 that mmyolo_ext fixes:
``--resume`` (torch.load weights_only) and the ``pytorch`` launcher on a
machine without CUDA (torch.cuda.set_device, DDP device_ids)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / 'tests' / 'toy'


def run(args, cwd, **env_extra):
    env = dict(os.environ, PYTHONPATH=f'{TOY}{os.pathsep}{ROOT}',
               OMP_NUM_THREADS='1', **env_extra)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def scalars(work_dir: Path) -> list:
    """The per-iteration log records of the runs in work_dir, in order."""
    records = []
    for path in sorted(work_dir.glob('*/vis_data/scalars.json')):
        records += [json.loads(line) for line in path.read_text().splitlines()]
    return records


PLAIN_MMENGINE_TRAIN = (
    'import sys; from mmengine.config import Config; '
    'from mmengine.runner import Runner; '
    'cfg = Config.fromfile(sys.argv[1]); cfg.work_dir = sys.argv[2]; '
    'Runner.from_cfg(cfg).train()')


def test_plain_mmengine_checkpoint_needs_the_fix(tmp_path):
    """Without mmyolo_ext, torch's weights_only loader refuses mmengine's
    checkpoint: this is the failure the fix exists for."""
    out = run([sys.executable, '-c', PLAIN_MMENGINE_TRAIN,
               str(TOY / 'toy_runner.py'), str(tmp_path)], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = tmp_path / 'iter_4.pth'
    check = ('import sys, torch; torch.load(sys.argv[1])')
    plain = run([sys.executable, '-c', check, str(ckpt)], tmp_path)
    if plain.returncode == 0:
        pytest.skip(f'torch {torch.__version__} loads mmengine checkpoints '
                    'without the fix')
    assert 'HistoryBuffer' in plain.stderr
    fixed = run([sys.executable, '-c', 'import mmyolo_ext; ' + check,
                 str(ckpt)], tmp_path)
    assert fixed.returncode == 0, fixed.stderr[-3000:]


def test_resume_plain_mmengine_checkpoint(tmp_path):
    """A checkpoint written by a plain mmengine run (no mmyolo_ext) resumes
    with our tools/train.py and training continues from iteration 4."""
    first = run([sys.executable, '-c', PLAIN_MMENGINE_TRAIN,
                 str(TOY / 'toy_runner.py'), str(tmp_path)], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run([sys.executable, str(ROOT / 'tools' / 'train.py'),
                  str(TOY / 'toy_runner.py'), '--work-dir', str(tmp_path),
                  '--resume', '--cfg-options', 'train_cfg.max_iters=8'],
                 tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert 'resumed epoch: 0, iter: 4' in second.stdout + second.stderr
    iters = [r['iter'] for r in scalars(tmp_path) if 'loss' in r]
    assert iters == [1, 2, 3, 4, 5, 6, 7, 8]
    assert (tmp_path / 'iter_8.pth').exists()


def test_resume_continues_like_an_uninterrupted_run(tmp_path):
    """Stopped at iteration 4 and resumed to 8, the run ends with the same
    weights and losses as a run of 8 iterations without a stop."""
    stopped, whole = tmp_path / 'stopped', tmp_path / 'whole'
    train = [sys.executable, str(ROOT / 'tools' / 'train.py'),
             str(TOY / 'toy_runner.py')]
    for args in ([*train, '--work-dir', str(stopped)],
                 [*train, '--work-dir', str(stopped), '--resume',
                  '--cfg-options', 'train_cfg.max_iters=8'],
                 [*train, '--work-dir', str(whole),
                  '--cfg-options', 'train_cfg.max_iters=8']):
        out = run(args, tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
    losses = {name: [r['loss'] for r in scalars(d) if 'loss' in r]
              for name, d in (('stopped', stopped), ('whole', whole))}
    assert losses['stopped'] == pytest.approx(losses['whole'], rel=1e-6)
    weights = [torch.load(d / 'iter_8.pth')['state_dict'] for d in
               (stopped, whole)]
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key])


def test_dist_train_two_cpu_processes(tmp_path):
    """tools/dist_train.sh CONFIG 2 on a machine without CUDA: gloo, two
    processes, DDP without device_ids; both ranks train all iterations."""
    if torch.cuda.is_available():
        pytest.skip('this test covers the machine without CUDA')
    out = run(['bash', str(ROOT / 'tools' / 'dist_train.sh'),
               str(TOY / 'toy_runner.py'), '2', '--work-dir', str(tmp_path)],
              tmp_path, PYTHON=sys.executable, PORT='29517',
              CUDA_VISIBLE_DEVICES='')
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert 'Distributed launcher: pytorch' in log
    assert "'world_size': 2" in log.replace('"', "'") or \
        'World size: 2' in log
    assert (tmp_path / 'iter_4.pth').exists()
