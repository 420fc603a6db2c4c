"""Runs killed at any moment lose nothing: the toy run of
helpers/toy_long_run.py (3 epochs of 8 iterations, summed accumulation
over 3, warm-up, EMA, a skipped non-finite step an epoch, a checkpoint
after every iteration) killed with SIGKILL at random moments, inside
checkpoint writes too, and stopped with SIGTERM mid-epoch, then resumed,
ends bitwise where an uninterrupted run ends; a full disk during a save and
truncated checkpoints give errors that name the file."""
import errno
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import mmyolo_ext  # noqa: F401  (registers our hook, weights-only loads)
from helpers.forked_train import (TRAIN, has_ended, kill_after, run_train,
                                  start_train, wait)
from helpers.paths import ROOT, TOY
from helpers.tools import load_tool
from mmyolo_ext.engine import checkpoint_files
from mmyolo_ext.engine.checkpoint_files import (FINISHER, TEMP_INFIX,
                                                CheckpointSaveError,
                                                DamagedCheckpointError,
                                                check_checkpoint_file,
                                                write_atomically)
from mmyolo_ext.engine.preemption import PreemptionSignals

TOY_RUN = TOY / 'toy_long_run.py'
LAST_ITER = 24


def toy_config(tmp_path: Path, name: str, checkpoint: dict) -> Path:
    """helpers/toy_long_run.py with ``checkpoint`` merged into its
    checkpoint hook."""
    path = tmp_path / f'{name}.py'
    path.write_text(textwrap.dedent(f"""
        _base_ = [{str(TOY_RUN)!r}]
        default_hooks = dict(checkpoint={checkpoint!r})
        """))
    return path


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory) -> Path:
    """The work dir of the toy run trained without interruption, and its
    sample order file (``order.txt``)."""
    work = tmp_path_factory.mktemp('uninterrupted')
    code = run_train([str(TOY_RUN), '--work-dir', str(work)],
                     work / 'log.txt', dict(TOY_ORDER_FILE=str(work /
                                                               'order.txt')))
    assert code == 0, (work / 'log.txt').read_text()[-3000:]
    return work


def load(path: Path) -> dict:
    return torch.load(path, map_location='cpu')


def assert_bitwise_equal(a, b, where: str = '') -> None:
    """Equal values, tensors bit for bit (NaN where NaN)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a.view(-1).view(torch.uint8) if a.numel() else a,
                           b.view(-1).view(torch.uint8) if b.numel() else b), \
            where
    elif isinstance(a, dict):
        assert sorted(a, key=str) == sorted(b, key=str), where
        for key in a:
            assert_bitwise_equal(a[key], b[key], f'{where}.{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f'{where}[{i}]')
    else:
        assert a == b, (where, a, b)


def assert_same_end(work: Path, reference: Path) -> None:
    """Weights, EMA, optimizer (momentum, accumulated window, skip
    counter) and schedulers of the last checkpoints are equal bit for
    bit."""
    ours = load(work / f'iter_{LAST_ITER}.pth')
    theirs = load(reference / f'iter_{LAST_ITER}.pth')
    for part in ('state_dict', 'ema_state_dict', 'optimizer',
                 'param_schedulers'):
        assert_bitwise_equal(ours[part], theirs[part], part)
    # the windows with the NaN sample: skipped, logged and counted
    skips = (reference / 'log.txt').read_text().count(
        'Skipped the optimizer step of')
    assert skips >= 2
    assert theirs['optimizer']['nonfinite_skips']['skipped_steps'] == skips
    assert (ours['meta']['epoch'], ours['meta']['iter']) == (2, LAST_ITER)


def assert_resumable_state(work: Path) -> None:
    """What a kill may leave: ``last_checkpoint`` names a complete
    checkpoint, and every checkpoint under its name is complete."""
    pointer = work / 'last_checkpoint'
    if pointer.exists():
        named = Path(pointer.read_text())
        check_checkpoint_file(str(named))
        load(named)
    for path in work.glob('iter_*.pth'):
        check_checkpoint_file(str(path))


def test_sigkill_at_random_moments_then_resume_ends_as_uninterrupted(
        tmp_path, uninterrupted):
    """20 SIGKILLs, every other one while a checkpoint is being written
    (the test's backend writes in slow chunks; fsync and rename in the
    background, as by default), each followed by
    ``--resume``; then the run completes. After every kill the last
    checkpoint is complete; the end is bitwise the uninterrupted one."""
    cfg = toy_config(tmp_path, 'slow_writes', dict(
        backend_args=dict(backend='toy_slow_chunked', background=True)))
    work = tmp_path / 'work'
    log = tmp_path / 'log.txt'
    args = [str(cfg), '--work-dir', str(work), '--resume']
    rng = random.Random(0)
    kills, inside_write, resumes = 0, 0, 0
    for attempt in range(20):
        resumes += (work / 'last_checkpoint').exists()
        # the iterations the run has left: a kill must come before its end
        # (on a quiet machine a run gets through many iterations a second)
        pointer = work / 'last_checkpoint'
        saved = int(re.search(r'iter_(\d+)', pointer.read_text()).group(1)
                    ) if pointer.exists() else 0
        left = LAST_ITER - saved
        pid = start_train(args, log)
        if attempt % 2 and left > 2:  # inside the 1st, 2nd or 3rd write
            writes, seen = min(rng.randint(1, 3), left - 2), set()
            deadline = time.monotonic() + 20
            while len(seen) < writes:
                seen.update(p.name for p in work.glob(f'.*{TEMP_INFIX}*'))
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                if has_ended(pid):
                    pytest.fail('the run ended before it was killed')
                time.sleep(0.001)
            delay = rng.uniform(0, 0.02)
        else:  # start-up, training or a save
            delay = rng.uniform(0.05, 0.5)
        code = kill_after(pid, delay)
        assert code == -signal.SIGKILL, log.read_text()[-3000:]
        kills += 1
        inside_write += bool(list(work.glob(f'.*{TEMP_INFIX}*')))
        assert_resumable_state(work)
    assert kills == 20 and inside_write >= 7, (kills, inside_write)
    assert resumes >= 13, resumes
    assert run_train(args, log) == 0, log.read_text()[-3000:]

    text = log.read_text()
    assert 'Traceback' not in text
    assert 'the temporary file of a save that was interrupted' in text
    # every run started after the first save resumed (a kill may come
    # before a run says so), and none met a damaged file
    assert text.count('no complete checkpoint') <= 20 - resumes
    assert text.count('--resume: resuming from') >= 13
    assert 'Not resuming from' not in text
    assert not list(work.glob(f'.*{TEMP_INFIX}*'))
    assert_same_end(work, uninterrupted)


def test_sigterm_mid_epoch_saves_and_resumes_with_the_same_samples(
        tmp_path, uninterrupted):
    """SIGTERM in the 3rd or 4th iteration of epoch 2 (checkpoints only every 5
    iterations): the iteration ends, its checkpoint is written, the log
    says how to resume, exit 143. The resumed run skips the epoch's trained
    batches: every iteration sees the samples of the uninterrupted run,
    once, and the end is bitwise the same. The run is a real
    ``python tools/train.py`` process with a persistent data worker, and
    the signal goes to its whole process group, as SLURM sends it: the
    worker goes on until the main process has saved, and the process
    exits (the interpreter's exit waits for the worker)."""
    cfg = toy_config(tmp_path, 'every5', dict(interval=5))
    with open(cfg, 'a') as f:
        f.write('train_dataloader = dict(num_workers=1, '
                'persistent_workers=True)\n')
    work = tmp_path / 'work'
    log, order = tmp_path / 'log.txt', tmp_path / 'order.txt'
    env = dict(os.environ, TOY_ORDER_FILE=str(order), OMP_NUM_THREADS='1',
               PYTHONPATH=f'{TOY}{os.pathsep}{ROOT}')

    def train(*extra: str) -> subprocess.Popen:
        with open(log, 'a') as out:
            return subprocess.Popen(
                [sys.executable, str(TRAIN), str(cfg), '--work-dir',
                 str(work), *extra],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                start_new_session=True)

    process = train()
    deadline = time.monotonic() + 120
    while not order.exists() or len(order.read_text().splitlines()) < 11:
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        assert process.poll() is None, log.read_text()[-3000:]
        time.sleep(0.001)
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=60) == 143, log.read_text()[-3000:]
    stopped_at = len(order.read_text().splitlines())
    assert 11 <= stopped_at < 16  # inside epoch 2
    assert stopped_at % 5, 'stopped where a regular checkpoint was due'
    text = log.read_text()
    assert f'Stopped by SIGTERM after iteration {stopped_at} (epoch 2)' in text
    assert (f'Resume with: python tools/train.py {cfg} --work-dir {work} '
            '--resume') in text
    assert (work / 'last_checkpoint').read_text() == str(
        work / f'iter_{stopped_at}.pth')

    assert train('--resume').wait(timeout=120) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert (f'skipping its {stopped_at - 8} already trained batches'
            in text)
    assert order.read_text() == (uninterrupted / 'order.txt').read_text()
    assert_same_end(work, uninterrupted)
    # the stop's checkpoint was retired by the next regular one
    assert not (work / f'iter_{stopped_at}.pth').exists()


def test_a_new_best_checkpoint_replaces_the_previous_one_without_a_gap(
        tmp_path):
    """Validation after each epoch, ``save_best``: while a new best is
    written (in slow chunks) the previous one stays; a watcher polling the
    work dir every half millisecond never sees it without a best file once
    the first exists, and one best file is left at the end."""
    cfg = toy_config(tmp_path, 'best', dict(
        interval=100, save_best='toy/score', rule='greater',
        backend_args=dict(backend='toy_slow_chunked')))
    with open(cfg, 'a') as f:
        f.write(textwrap.dedent("""
            val_dataloader = dict(
                batch_size=8, num_workers=0,
                sampler=dict(type='DefaultSampler', shuffle=False),
                collate_fn=dict(type='default_collate'),
                dataset=dict(type='CompatToyDataset'))
            val_evaluator = dict(type='ToyScoreMetric')
            val_cfg = dict()
            train_cfg = dict(val_interval=1)
            """))
    work = tmp_path / 'work'
    log = tmp_path / 'log.txt'
    pid = start_train([str(cfg), '--work-dir', str(work)], log)
    seen, gaps, done = set(), 0, False
    while not done:
        done = has_ended(pid)
        best = [p.name for p in work.glob('best_*.pth')] if work.exists() \
            else []
        gaps += bool(seen) and not best
        seen.update(best)
        time.sleep(0.0005)
    assert wait(pid) == 0
    text = log.read_text()
    assert 'Traceback' not in text, text[-3000:]
    replaced = text.count('The previous best checkpoint')
    assert replaced >= 1 and len(seen) == replaced + 1, (replaced, seen)
    assert gaps == 0
    assert len(list(work.glob('best_*.pth'))) == 1


def start_two_ranks(args, tmp_path: Path, name: str, port: int) -> list:
    """``tools/train.py ARGS --launcher pytorch`` as ranks 0 and 1 (gloo);
    their pids. Rank r logs to ``<name>_r.log``, and its sample order
    goes to ``<name>_order_r.txt``."""
    pids = []
    for rank in (0, 1):
        env = dict(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2',
                   MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                   TOY_ORDER_FILE=str(tmp_path / f'{name}_order_{rank}.txt'))
        pids.append(start_train([*args, '--launcher', 'pytorch'],
                                tmp_path / f'{name}_{rank}.log', env))
    return pids


def test_ddp_stop_on_one_rank_stops_both_at_the_same_iteration(tmp_path):
    """Two gloo processes; SIGTERM reaches rank 1 only, in epoch 2. Both
    finish the same iteration and exit 143, rank 0 writes its checkpoint;
    resumed, both ranks see the samples an uninterrupted two-process run
    sees, and end with its weights and EMA: within float32 rounding, as a
    save inside an accumulation window gives every rank the mean of the
    window's gradients so far (which DDP's next synchronised step would
    average anyway) where the other run sums them in another order."""
    if torch.cuda.is_available():
        pytest.skip('CPU processes (gloo) only')
    cfg = toy_config(tmp_path, 'every5', dict(interval=5))
    whole, work = tmp_path / 'whole', tmp_path / 'work'
    for pid in start_two_ranks([str(cfg), '--work-dir', str(whole)],
                               tmp_path, 'whole', 29541):
        assert wait(pid) == 0, (tmp_path / 'whole_0.log').read_text()[-3000:]

    args = [str(cfg), '--work-dir', str(work)]
    pids = start_two_ranks(args, tmp_path, 'stopped', 29542)
    order = [tmp_path / f'stopped_order_{rank}.txt' for rank in (0, 1)]
    deadline = time.monotonic() + 60
    while not order[1].exists() or len(order[1].read_text().split('\n')) < 7:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    os.kill(pids[1], signal.SIGTERM)
    assert [wait(pid) for pid in pids] == [143, 143], (
        tmp_path / 'stopped_0.log').read_text()[-3000:]
    stopped_at = [len(path.read_text().splitlines()) for path in order]
    assert stopped_at[0] == stopped_at[1] and 5 < stopped_at[0] < 9
    step = stopped_at[0]
    assert (f'Stopped by SIGTERM after iteration {step} (epoch 2)'
            in (tmp_path / 'stopped_0.log').read_text())
    assert (work / 'last_checkpoint').read_text() == str(
        work / f'iter_{step}.pth')

    for pid in start_two_ranks([*args, '--resume'], tmp_path, 'stopped',
                               29543):
        assert wait(pid) == 0, (tmp_path /
                                'stopped_0.log').read_text()[-3000:]
    for rank in (0, 1):
        assert (tmp_path / f'stopped_order_{rank}.txt').read_text() == (
            tmp_path / f'whole_order_{rank}.txt').read_text()
    ours, theirs = (load(d / 'iter_12.pth') for d in (work, whole))
    for part in ('state_dict', 'ema_state_dict'):
        for key, value in theirs[part].items():
            torch.testing.assert_close(ours[part][key], value, rtol=1e-5,
                                       atol=1e-7, equal_nan=True)


def test_second_sigint_interrupts_at_once():
    signals = PreemptionSignals()
    assert signals.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.received == signal.SIGINT
        os.kill(os.getpid(), signal.SIGTERM)  # the stop is under way
        assert signals.received == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        signals.uninstall()


def test_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    """ENOSPC half-way through iter_5.pth: the run stops with an error that
    names the folder, its free space and the checkpoint's size; iter_4.pth
    and last_checkpoint are untouched, the partial file is gone, and the
    run resumes from iter_4.pth (with room on the disk again)."""
    cfg = toy_config(tmp_path, 'full_disk', dict(
        backend_args=dict(backend='toy_full_disk', fail_on='iter_5.pth')))
    work = tmp_path / 'work'
    log = tmp_path / 'log.txt'
    assert run_train([str(cfg), '--work-dir', str(work)], log) == 1
    text = log.read_text()
    assert (f'Could not save checkpoint iter_5.pth in {work} (No space left '
            'on device: the disk is full)') in text
    assert ' free there, the checkpoint needs ' in text
    assert 'CheckpointSaveError' in text  # the run stopped on it
    assert sorted(p.name for p in work.iterdir() if p.is_file()) == [
        'full_disk.py', 'iter_3.pth', 'iter_4.pth', 'last_checkpoint']
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_4.pth')
    assert load(work / 'iter_4.pth')['meta']['iter'] == 4

    resumed = toy_config(tmp_path, 'room_again', dict(backend_args=None))
    assert run_train([str(resumed), '--work-dir', str(work), '--resume'],
                     log) == 0, log.read_text()[-3000:]
    assert f'--resume: resuming from {work}/iter_4.pth' in log.read_text()


def test_a_failed_rename_in_the_background_changes_nothing(
        tmp_path, monkeypatch):
    """EIO at the rename of a background write: the old file and pointer
    stay, the temporary file goes, what was queued after it is dropped,
    and waiting raises the named error."""
    target, pointer = tmp_path / 'iter_2.pth', tmp_path / 'last_checkpoint'
    target.write_bytes(b'previous')
    pointer.write_text(str(target))

    def failing_replace(src, dst):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(checkpoint_files.os, 'replace', failing_replace)
    write_atomically(str(target), b'new checkpoint', background=True)
    FINISHER.submit(pointer.write_text, 'must not be written')
    with pytest.raises(CheckpointSaveError) as error:
        FINISHER.wait()
    assert (f'Could not save checkpoint iter_2.pth in {tmp_path} '
            '(Input/output error: the disk reported an error)') in str(
                error.value)
    assert target.read_bytes() == b'previous'
    assert pointer.read_text() == str(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'iter_2.pth', 'last_checkpoint']


def truncated_copy(source: Path, target: Path, fraction: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[:int(len(data) * fraction)])
    return target


def test_check_checkpoint_file_on_truncations(tmp_path):
    """A checkpoint cut anywhere is refused (naming file and size); the
    whole file, and torch's legacy format, pass."""
    path = tmp_path / 'ckpt.pth'
    torch.save(dict(state_dict=dict(w=torch.arange(1000.))), path)
    check_checkpoint_file(str(path))
    size = path.stat().st_size
    for fraction in (0.0, 0.1, 0.5, 0.9, 0.99, (size - 1) / size):
        cut = truncated_copy(path, tmp_path / 'cut.pth', fraction)
        with pytest.raises(DamagedCheckpointError) as error:
            check_checkpoint_file(str(cut))
        assert (f'{cut} ({cut.stat().st_size} bytes) is truncated or not a '
                'checkpoint') in str(error.value)
    legacy = tmp_path / 'legacy.pth'
    torch.save(dict(w=torch.ones(3)), legacy,
               _use_new_zipfile_serialization=False)
    check_checkpoint_file(str(legacy))
    text = tmp_path / 'notes.pth'
    text.write_text('not a checkpoint')
    with pytest.raises(DamagedCheckpointError, match='not a checkpoint'):
        check_checkpoint_file(str(text))


def test_resume_passes_over_a_truncated_checkpoint(tmp_path, uninterrupted):
    """--resume PATH on a truncated file names it and the newest good one;
    --resume (auto) warns and takes the newest good one."""
    work = tmp_path / 'work'
    work.mkdir()
    for name in ('iter_23.pth', 'iter_24.pth'):
        (work / name).write_bytes((uninterrupted / name).read_bytes())
    (work / 'last_checkpoint').write_text(str(work / 'iter_24.pth'))
    truncated_copy(uninterrupted / 'iter_24.pth', work / 'iter_24.pth', 0.6)
    size = (work / 'iter_24.pth').stat().st_size
    log = tmp_path / 'log.txt'

    code = run_train([str(TOY_RUN), '--work-dir', str(work), '--resume',
                      str(work / 'iter_24.pth')], log)
    assert code == 1
    assert (f'{work}/iter_24.pth ({size} bytes) is truncated or not a '
            f'checkpoint: no zip central directory') in log.read_text()
    assert (f'The newest good checkpoint there is {work}/iter_23.pth'
            in log.read_text())

    assert run_train([str(TOY_RUN), '--work-dir', str(work), '--resume'],
                     log) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert (f'Not resuming from {work}/iter_24.pth ({size} bytes) is '
            'truncated or not a checkpoint') in text
    assert f'--resume: resuming from {work}/iter_23.pth' in text
    assert 'Traceback' not in text


def test_resume_candidates_pass_over_a_missing_last_checkpoint(tmp_path):
    """``last_checkpoint`` naming a file that is gone (what mmengine's hook
    left: "Auto resumed from ... epoch_1.pth", then FileNotFoundError):
    the newest complete periodic checkpoint (by modification time) is
    taken, then a best one."""
    def save(name: str, mtime: int) -> Path:
        path = tmp_path / name
        torch.save(dict(state_dict=dict(w=torch.ones(2))), path)
        os.utime(path, (mtime, mtime))
        return path

    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_1.pth'))
    save('best_coco_bbox_mAP_epoch_3.pth', 300)
    assert checkpoint_files.find_resumable_checkpoint(
        str(tmp_path), warn=lambda _: None).endswith('best_coco_bbox_mAP_'
                                                     'epoch_3.pth')
    save('epoch_2.pth', 200)
    save('iter_90.pth', 250)
    truncated_copy(save('epoch_3.pth', 300), tmp_path / 'epoch_3.pth', 0.5)
    os.utime(tmp_path / 'epoch_3.pth', (300, 300))
    assert checkpoint_files.resume_candidates(str(tmp_path)) == [
        str(tmp_path / name) for name in (
            'epoch_3.pth', 'iter_90.pth', 'epoch_2.pth',
            'best_coco_bbox_mAP_epoch_3.pth')]
    warnings = []
    assert checkpoint_files.find_resumable_checkpoint(
        str(tmp_path), warnings.append) == str(tmp_path / 'iter_90.pth')
    assert len(warnings) == 1 and 'epoch_3.pth' in warnings[0]


@pytest.mark.parametrize('tool, args', [
    ('tools/test.py', ['CONFIG', 'CKPT']),
    ('tools/deployment/image_demo.py', ['IMAGE', 'CONFIG', '--weights',
                                        'CKPT']),
    ('tools/model_converters/reparameterize.py', ['CONFIG', 'CKPT', 'OUT']),
    ('tools/deployment/export_onnx.py', ['CONFIG', 'CKPT', '--out', 'OUT']),
])
def test_tools_name_a_truncated_checkpoint(tmp_path, monkeypatch, tool,
                                           args):
    """Each tool stops with the file, its size and "truncated or not a
    checkpoint", before any zipfile or unpickling error."""
    good = tmp_path / 'good.pth'
    torch.save(dict(state_dict=dict(w=torch.arange(100.))), good)
    ckpt = truncated_copy(good, tmp_path / 'epoch_3.pth', 0.5)
    values = dict(CONFIG=str(ROOT / 'configs' / 'yolov7_tiny_demo.py'),
                  CKPT=str(ckpt), OUT=str(tmp_path / 'out'),
                  IMAGE=str(tmp_path))
    argv = [values.get(a, a) for a in args]
    module = load_tool(tool)
    monkeypatch.setattr('sys.argv', [tool, *argv])
    with pytest.raises(SystemExit) as stop:
        module.main()
    assert str(stop.value.code).startswith(
        f'{ckpt} ({ckpt.stat().st_size} bytes) is truncated or not a '
        'checkpoint: no zip central directory')
    assert 'There is no good checkpoint beside it' in str(stop.value.code)


def test_every_scope_builds_our_checkpoint_hook():
    """``type='CheckpointHook'`` gives ours in mmengine's default scope and
    in mmdet's, mmyolo's and ours."""
    from mmengine.registry import HOOKS, DefaultScope

    from mmyolo_ext.engine.hooks import AtomicCheckpointHook
    for scope in ('mmengine', 'mmdet', 'mmyolo', 'mmyolo_ext'):
        with DefaultScope.overwrite_default_scope(scope):
            hook = HOOKS.build(dict(type='CheckpointHook', interval=1))
        assert type(hook) is AtomicCheckpointHook, scope
