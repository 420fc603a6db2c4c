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


def killed(out: subprocess.CompletedProcess) -> bool:
    from toy_modules import KILLED_EXIT_CODE
    return out.returncode == KILLED_EXIT_CODE


sys.path.insert(0, str(TOY))


def test_plain_mmengine_checkpoint_needs_the_fix(tmp_path):
    """Without mmyolo_ext, torch's weights_only loader refuses mmengine's
    checkpoint: this is the failure the fix exists for."""
    out = run([sys.executable, '-c', PLAIN_MMENGINE_TRAIN,
               str(TOY / 'toy_runner.py'), str(tmp_path)], tmp_path,
              TOY_KILL_AT='4')
    assert killed(out), out.stderr[-3000:]
    ckpt = tmp_path / 'iter_4.pth'
    check = 'import sys, torch; torch.load(sys.argv[1])'
    plain = run([sys.executable, '-c', check, str(ckpt)], tmp_path)
    if plain.returncode == 0:
        pytest.skip(f'torch {torch.__version__} loads mmengine checkpoints '
                    'without the fix')
    assert 'HistoryBuffer' in plain.stderr
    fixed = run([sys.executable, '-c', 'import mmyolo_ext; ' + check,
                 str(ckpt)], tmp_path)
    assert fixed.returncode == 0, fixed.stderr[-3000:]


def test_fix_refuses_other_getattr_calls():
    """The allow-listed getattr resolves HistoryBuffer's statistics methods
    and nothing else."""
    import pickle

    import mmyolo_ext.engine.compat as compat
    from mmengine.logging import HistoryBuffer
    assert compat._history_buffer_getattr(HistoryBuffer, 'mean') is \
        HistoryBuffer.mean
    for owner, name in ((HistoryBuffer, '__init__'), (os, 'system'),
                        (HistoryBuffer, '_statistics_methods')):
        with pytest.raises(pickle.UnpicklingError, match='refused getattr'):
            compat._history_buffer_getattr(owner, name)


def test_resume_plain_mmengine_checkpoint_continues_like_an_uninterrupted_run(
        tmp_path):
    """A plain mmengine run (no mmyolo_ext) killed after iteration 4 is
    resumed by our tools/train.py; it ends with the same losses and weights as
    a run of 8 iterations without a stop (deterministic CPU run)."""
    stopped, whole = tmp_path / 'stopped', tmp_path / 'whole'
    out = run([sys.executable, '-c', PLAIN_MMENGINE_TRAIN,
               str(TOY / 'toy_runner.py'), str(stopped)], tmp_path,
              TOY_KILL_AT='4')
    assert killed(out), out.stderr[-3000:]
    assert not (stopped / 'iter_6.pth').exists()
    train = [sys.executable, str(ROOT / 'tools' / 'train.py'),
             str(TOY / 'toy_runner.py')]
    resumed = run([*train, '--work-dir', str(stopped), '--resume'], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed epoch: 0, iter: 4' in resumed.stdout + resumed.stderr
    out = run([*train, '--work-dir', str(whole)], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]

    logs = {d: [r for r in scalars(d) if 'loss' in r] for d in (stopped,
                                                                whole)}
    assert [r['iter'] for r in logs[stopped]] == list(range(1, 9))
    for key in ('loss', 'lr'):  # lr: the scheduler state came back too
        assert [r[key] for r in logs[stopped]] == pytest.approx(
            [r[key] for r in logs[whole]], rel=1e-6, abs=1e-9)
    ends = [torch.load(d / 'iter_8.pth') for d in (stopped, whole)]
    for key in ends[0]['state_dict']:
        torch.testing.assert_close(ends[0]['state_dict'][key],
                                   ends[1]['state_dict'][key])
    torch.testing.assert_close(ends[0]['optimizer']['state'],
                               ends[1]['optimizer']['state'])


def test_resume_our_run_by_checkpoint_path(tmp_path):
    """A run of our tools/train.py, killed, resumes from an explicit
    checkpoint path (--resume PATH) and finishes."""
    train = [sys.executable, str(ROOT / 'tools' / 'train.py'),
             str(TOY / 'toy_runner.py'), '--work-dir', str(tmp_path)]
    assert killed(run(train, tmp_path, TOY_KILL_AT='4'))
    out = run([*train, '--resume', str(tmp_path / 'iter_2.pth')], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'resumed epoch: 0, iter: 2' in out.stdout + out.stderr
    assert (tmp_path / 'iter_8.pth').exists()


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
    assert 'Distributed training: True' in log
    # each of the two ranks fell back to gloo
    assert log.count("using the gloo backend instead of 'nccl'") == 2
    assert (tmp_path / 'iter_4.pth').exists()
