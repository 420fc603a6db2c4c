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

from helpers.concurrent_runs import command, run_all

from helpers.paths import ROOT
from helpers.paths import TOY


def run(args, cwd, **env_extra):
    """``args`` as a process: call the result, or start it by
    :func:`run_all` alongside others."""
    env = dict(os.environ, PYTHONPATH=f'{TOY}{os.pathsep}{ROOT}',
               OMP_NUM_THREADS='1', **env_extra)
    return command(args, cwd=cwd, env=env, timeout=300)


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
LOAD = 'import sys, torch; torch.load(sys.argv[1])'


def killed(out: subprocess.CompletedProcess) -> bool:
    from helpers.toy_modules import KILLED_EXIT_CODE
    return out.returncode == KILLED_EXIT_CODE



@pytest.fixture(scope='module')
def toy_runs(tmp_path_factory):
    """The toy runs the resume tests read, independent ones at once.

    * ``plain``: a plain mmengine run (no mmyolo_ext), killed after
      iteration 4; then, in its work dir, resumed by our tools/train.py
      (``--resume``), and its iteration-4 checkpoint loaded by plain torch;
    * ``ours``: our tools/train.py, killed after iteration 4, then resumed
      from an explicit checkpoint path (``--resume PATH``);
    * ``whole``: our tools/train.py for all 8 iterations.

    Returns:
        dict: the work dirs, the ``CompletedProcess`` of every step and the
        files of the killed plain run before its resume.
    """
    tmp = tmp_path_factory.mktemp('toy_runs')
    plain, ours, whole = tmp / 'plain', tmp / 'ours', tmp / 'whole'
    train = [sys.executable, str(ROOT / 'tools' / 'train.py'),
             str(TOY / 'toy_runner.py')]
    out = dict(dirs=dict(plain=plain, ours=ours, whole=whole))

    def plain_chain():
        out['plain_killed'] = run(
            [sys.executable, '-c', PLAIN_MMENGINE_TRAIN,
             str(TOY / 'toy_runner.py'), str(plain)], tmp, TOY_KILL_AT='4')()
        out['plain_files'] = sorted(
            p.name for p in plain.iterdir()) if plain.is_dir() else []
        ckpt = str(plain / 'iter_4.pth')
        out['plain_resumed'], out['load_plain'] = run_all(
            run([*train, '--work-dir', str(plain), '--resume'], tmp),
            run([sys.executable, '-c', LOAD, ckpt], tmp))

    def ours_chain():
        ours_train = [*train, '--work-dir', str(ours)]
        out['ours_killed'] = run(ours_train, tmp, TOY_KILL_AT='4')()
        out['ours_resumed'] = run(
            [*ours_train, '--resume', str(ours / 'iter_2.pth')], tmp)()

    def whole_run():
        out['whole'] = run([*train, '--work-dir', str(whole)], tmp)()

    run_all(plain_chain, ours_chain, whole_run)
    return out


def test_plain_mmengine_checkpoint_needs_the_fix(toy_runs):
    """Without mmyolo_ext, torch's weights_only loader refuses mmengine's
    checkpoint: this is the failure the fix exists for."""
    out = toy_runs['plain_killed']
    assert killed(out), out.stderr[-3000:]
    assert 'iter_4.pth' in toy_runs['plain_files']
    plain = toy_runs['load_plain']
    if plain.returncode == 0:
        pytest.skip(f'torch {torch.__version__} loads mmengine checkpoints '
                    'without the fix')
    assert 'HistoryBuffer' in plain.stderr
    # with the fix: torch.load's default (weights_only) in this process,
    # where mmyolo_ext is imported (a fresh process is needed only for the
    # plain load above)
    import mmyolo_ext  # noqa: F401
    ckpt = torch.load(toy_runs['dirs']['plain'] / 'iter_4.pth')
    assert ckpt['meta']['iter'] == 4


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
        toy_runs):
    """A plain mmengine run (no mmyolo_ext) killed after iteration 4 is
    resumed by our tools/train.py; it ends with the same losses and weights as
    a run of 8 iterations without a stop (deterministic CPU run)."""
    stopped, whole = toy_runs['dirs']['plain'], toy_runs['dirs']['whole']
    out = toy_runs['plain_killed']
    assert killed(out), out.stderr[-3000:]
    assert 'iter_6.pth' not in toy_runs['plain_files']
    resumed = toy_runs['plain_resumed']
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed epoch: 0, iter: 4' in resumed.stdout + resumed.stderr
    out = toy_runs['whole']
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


def test_resume_our_run_by_checkpoint_path(toy_runs):
    """A run of our tools/train.py, killed, resumes from an explicit
    checkpoint path (--resume PATH) and finishes."""
    assert killed(toy_runs['ours_killed'])
    out = toy_runs['ours_resumed']
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'resumed epoch: 0, iter: 2' in out.stdout + out.stderr
    assert (toy_runs['dirs']['ours'] / 'iter_8.pth').exists()


def test_dist_train_two_cpu_processes(tmp_path):
    """tools/dist_train.sh CONFIG 2 on a machine without CUDA: gloo, two
    processes, DDP without device_ids; both ranks train all iterations."""
    if torch.cuda.is_available():
        pytest.skip('this test covers the machine without CUDA')
    out = run(['bash', str(ROOT / 'tools' / 'dist_train.sh'),
               str(TOY / 'toy_runner.py'), '2', '--work-dir', str(tmp_path)],
              tmp_path, PYTHON=sys.executable, PORT='29517',
              CUDA_VISIBLE_DEVICES='')()
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert 'Distributed launcher: pytorch' in log
    assert 'Distributed training: True' in log
    # each of the two ranks fell back to gloo
    assert log.count("using the gloo backend instead of 'nccl'") == 2
    assert (tmp_path / 'iter_4.pth').exists()
