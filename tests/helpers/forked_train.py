"""tools/train.py run in a forked copy of the test process, to be killed.

A fresh ``python tools/train.py`` spends seconds importing torch and the
OpenMMLab stack; a fork of the test process, which has imported them
already, starts training at once, so a test can kill and resume a run
twenty times in seconds. The child is a real process: SIGKILL and SIGTERM
reach it as they reach any training process.
"""
import logging
import multiprocessing.util
import os
import runpy
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, Optional, Sequence

from helpers.paths import ROOT, TOY

TRAIN = ROOT / 'tools' / 'train.py'


def start_train(args: Sequence[str], log: Path,
                env: Optional[Dict[str, str]] = None) -> int:
    """Fork; the child runs ``tools/train.py ARGS`` with its output appended
    to ``log`` and ends with the tool's exit code. Returns the child's
    pid."""
    import mmyolo_ext  # noqa: F401  (imported once, before the fork)
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        out = os.open(str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(out, 1)
        os.dup2(out, 2)
        sys.stdout = sys.stderr = os.fdopen(out, 'w', buffering=1)
        # loggers made before the fork write to the test's captured output
        from mmengine.logging import MMLogger
        for logger in MMLogger._instance_dict.values():
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and \
                        not isinstance(handler, logging.FileHandler):
                    handler.setStream(sys.stdout)
        os.environ.update(env or {})
        sys.path.insert(0, str(TOY))
        sys.argv = [str(TRAIN), *args]
        runpy.run_path(str(TRAIN), run_name='__main__')
        code = 0
    except SystemExit as error:
        if isinstance(error.code, int) or error.code is None:
            code = error.code or 0
        else:
            print(error.code, file=sys.stderr)
    except BaseException:  # noqa: B036  (reported in the log)
        traceback.print_exc()
    finally:
        # what the interpreter's exit does for child processes (it ends and
        # waits for the data workers); the test process's other exit
        # handlers are not the child's to run
        multiprocessing.util._exit_function()
        sys.stdout.flush()
        os._exit(code)


def wait(pid: int, timeout: float = 300) -> int:
    """The child's exit code, or minus the signal that ended it; a child
    still running after ``timeout`` seconds is killed and reported."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f'the run (pid {pid}) did not end within '
                                 f'{timeout} s')
        time.sleep(0.01)


def run_train(args: Sequence[str], log: Path,
              env: Optional[Dict[str, str]] = None) -> int:
    return wait(start_train(args, log, env))


def kill_after(pid: int, seconds: float,
               signum: int = signal.SIGKILL) -> int:
    """Send ``signum`` after ``seconds`` (unless the child ended before);
    the child's exit code."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signum)
    return wait(pid)
