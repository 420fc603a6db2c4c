"""tools/train.py run in a forked process, to be killed.

A fresh ``python tools/train.py`` spends seconds importing torch and the
OpenMMLab stack; a forked process that has imported them already starts
training at once, so a test can kill and resume a run twenty times in
seconds. The children fork from multiprocessing's fork server, a fresh
interpreter that imported the stack once (``set_forkserver_preload``), not
from the test process: a fork of the test process inherits what the tests
before it left running (onnxruntime's and OpenVINO's thread pools, open
loggers), and such children failed after the rest of the suite. The child
is a real process: SIGKILL and SIGTERM reach it as any training process.
"""
import multiprocessing
import os
import runpy
import signal
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

from helpers.paths import ROOT, TOY

TRAIN = ROOT / 'tools' / 'train.py'
_CONTEXT = multiprocessing.get_context('forkserver')
_CONTEXT.set_forkserver_preload(['mmyolo_ext', 'helpers.forked_train'])
_RUNS: Dict[int, multiprocessing.Process] = {}


def _train(args: Sequence[str], log: str, env: Dict[str, str]) -> None:
    """The child: ``tools/train.py ARGS`` with its output appended to
    ``log``; its SystemExit code is the process's exit code."""
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(out, 1)
    os.dup2(out, 2)
    sys.stdout = sys.stderr = os.fdopen(out, 'w', buffering=1)
    os.environ.update(env)
    sys.path.insert(0, str(TOY))
    sys.argv = [str(TRAIN), *args]
    try:
        runpy.run_path(str(TRAIN), run_name='__main__')
    finally:
        sys.stdout.flush()


def start_train(args: Sequence[str], log: Path,
                env: Optional[Dict[str, str]] = None) -> int:
    """Start ``tools/train.py ARGS`` in a child forked from the fork server,
    its output appended to ``log``. Returns the child's pid."""
    run = _CONTEXT.Process(target=_train,
                           args=(list(args), str(log), dict(env or {})))
    run.start()
    _RUNS[run.pid] = run
    return run.pid


def _exit_code(pid: int, timeout: float) -> Optional[int]:
    """The child's exit code (minus the signal that ended it), or None
    while it runs after ``timeout`` seconds."""
    run = _RUNS[pid]
    run.join(timeout)
    return run.exitcode


def has_ended(pid: int) -> bool:
    """Whether the child has ended (without waiting)."""
    return _exit_code(pid, 0) is not None


def wait(pid: int, timeout: float = 300) -> int:
    """The child's exit code, or minus the signal that ended it; a child
    still running after ``timeout`` seconds is killed and reported."""
    code = _exit_code(pid, timeout)
    if code is None:
        os.kill(pid, signal.SIGKILL)
        _RUNS[pid].join()
        raise AssertionError(f'the run (pid {pid}) did not end within '
                             f'{timeout} s')
    return code


def run_train(args: Sequence[str], log: Path,
              env: Optional[Dict[str, str]] = None) -> int:
    return wait(start_train(args, log, env))


def kill_after(pid: int, seconds: float,
               signum: int = signal.SIGKILL) -> int:
    """Send ``signum`` after ``seconds`` (unless the child ended before);
    the child's exit code."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        code = _exit_code(pid, 0.005)
        if code is not None:
            return code
    os.kill(pid, signum)
    return wait(pid)
