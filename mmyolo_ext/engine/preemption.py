"""The stop signals of a preempted run (SIGTERM, SIGINT), noted so training
can stop at the end of an iteration instead of in the middle of it.

SLURM (``#SBATCH --signal=TERM@120``), Kubernetes and the spot-instance
agents send SIGTERM some time before they kill; Ctrl-C sends SIGINT. The
first of either only sets a flag here; the checkpoint hook reads it after
each iteration, saves and exits. A second SIGINT interrupts at once (the
usual Ctrl-C), a second SIGTERM is ignored (the stop is under way).

SLURM and Ctrl-C signal the data workers as well, and PyTorch's workers die
on SIGTERM (and leave on SIGINT): the main process would then fail on a
lost worker before it could save. :func:`keep_workers_through_stops` makes
the workers of a dataloader ignore both until the main process exits; then
they end on its signal as before.
"""
import atexit
import os
import signal
import sys
import threading
from typing import Callable, Dict, Optional

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_code(signum: int) -> int:
    """The shell's code for a process ended by ``signum`` (143, 130)."""
    return 128 + int(signum)


class PreemptionSignals:
    """Notes the first SIGTERM / SIGINT while installed.

    Attributes:
        received (int | None): The first stop signal received, or None.
    """

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: Dict[int, object] = {}
        self._owner_pid: Optional[int] = None

    def install(self) -> bool:
        """Take over the stop signals; False where that is impossible (not
        the main thread of the main interpreter)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        self.received = None
        self._owner_pid = os.getpid()
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return True

    def uninstall(self) -> None:
        """Give the signals back to their previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if os.getpid() != self._owner_pid:
            return  # a forked data worker: the main process stops it
        if self.received is None:
            self.received = signum
            os.write(
                sys.stderr.fileno(),
                f'\n{signal.Signals(signum).name} received: stopping after '
                'this iteration with a checkpoint of it (Ctrl-C again to '
                'stop at once)\n'.encode())
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt


class _IgnoreStopSignals:
    """A dataloader ``worker_init_fn``: the worker ignores the stop signals
    until the main process exits, then runs the loader's own init function.
    (PyTorch installs its worker signal handlers before calling it.)"""

    def __init__(self, init_fn: Optional[Callable[[int], None]],
                 main_exiting) -> None:
        self.init_fn = init_fn
        self.main_exiting = main_exiting

    def __call__(self, worker_id: int) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_stop_signal)
        if self.init_fn is not None:
            self.init_fn(worker_id)

    def _on_stop_signal(self, signum: int, frame) -> None:
        # from outside (SLURM, Ctrl-C): the main process handles the stop;
        # from the main process ending its workers: end as by default
        if self.main_exiting.value:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


_main_exiting = None  # shared with the workers: the main process exits


def _mark_main_exiting() -> None:
    _main_exiting.value = 1


def keep_workers_through_stops(dataloader) -> None:
    """Let the worker processes ``dataloader`` starts from now on ignore
    SIGTERM and SIGINT until this process exits (see the module's note)."""
    global _main_exiting
    if not getattr(dataloader, 'num_workers', 0) or isinstance(
            dataloader.worker_init_fn, _IgnoreStopSignals):
        return
    if _main_exiting is None:
        import multiprocessing
        _main_exiting = multiprocessing.RawValue('b', 0)
        # runs before multiprocessing's own exit handler (registered
        # earlier), which terminates and waits for the workers
        atexit.register(_mark_main_exiting)
    dataloader.worker_init_fn = _IgnoreStopSignals(dataloader.worker_init_fn,
                                                   _main_exiting)
