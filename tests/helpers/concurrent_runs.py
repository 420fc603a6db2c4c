"""Command lines run side by side, for tests that start several processes.

Each process of these tests is single-threaded (``OMP_NUM_THREADS=1``) and
spends seconds importing torch and the OpenMMLab stack: run one after the
other, they leave the second core of a two-core CI machine idle. Running
independent ones at once changes nothing that they compute.
"""
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Sequence


def run_all(*calls: Callable[[], object]) -> List[object]:
    """Call each of ``calls`` in its own thread; their results, in order.

    An exception of one call is raised after every call has returned.
    """
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


def command(args: Sequence[str], **kwargs) -> Callable[[], object]:
    """``subprocess.run(args, capture_output=True, text=True, **kwargs)``,
    to be started by :func:`run_all`."""
    return lambda: subprocess.run(
        list(args), capture_output=True, text=True, **kwargs)
