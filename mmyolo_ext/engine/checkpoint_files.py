"""Checkpoint files on a local disk: written atomically, checked cheaply,
and the newest good one found for ``--resume``.

A checkpoint is written to a temporary file in its own folder, flushed and
fsynced, then renamed onto its name (``os.replace``, atomic on POSIX and
Windows) and the folder fsynced, as TensorFlow's CheckpointManager and Orbax
do: a kill at any moment leaves either the previous file or the complete
new one under the name, never a truncated one. A failed write (a full disk,
an I/O error) deletes its temporary file and raises
:class:`CheckpointSaveError`, which names the folder, its free space and
the size of the checkpoint.

:func:`check_checkpoint_file` tells a complete checkpoint from a truncated
one without loading it: ``torch.save`` writes a zip archive whose central
directory is at its very end, so a file cut short has none.
"""
import errno
import glob
import os
import os.path as osp
import re
import shutil
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, List, Optional, Union

from mmengine.fileio import LocalBackend, register_backend

TEMP_INFIX = '.tmp-'  # ``.<name>.tmp-<pid>``: hidden, same folder
LAST_CHECKPOINT = 'last_checkpoint'  # mmengine's pointer file in work_dir
_TEMP_PATTERN = re.compile(r'^\..+\.tmp-(\d+)$')
# the first bytes of torch's legacy (pre-1.6, not zip) format: a pickle of
# protocol 2 whose first object is a long (its magic number)
_LEGACY_TORCH_MAGIC = b'\x80\x02\x8a\x0a'


class DamagedCheckpointError(ValueError):
    """A checkpoint file that is truncated, or no checkpoint at all."""


class CheckpointSaveError(OSError):
    """A checkpoint that could not be written (full disk, I/O error)."""


def _size_text(num_bytes: float) -> str:
    for unit in ('B', 'KB', 'MB', 'GB'):
        if num_bytes < 1000 or unit == 'GB':
            return (f'{num_bytes:.0f} {unit}' if unit == 'B' else
                    f'{num_bytes:.1f} {unit}')
        num_bytes /= 1000
    raise AssertionError('unreachable')


def temp_path_for(path: str) -> str:
    """The temporary name a write of ``path`` goes through."""
    folder, name = osp.split(path)
    return osp.join(folder, f'.{name}{TEMP_INFIX}{os.getpid()}')


def fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op on Windows)."""
    if os.name == 'nt':
        return
    fd = os.open(folder or '.', os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_contents(file, data: bytes) -> None:
    """How the bytes go into the open temporary file (one write)."""
    file.write(data)


class BackgroundFinisher:
    """One thread that finishes writes in the order they were handed over
    (fsync, rename, folder fsync, then whatever was queued after them), so
    training goes on while the disk catches up, as asynchronous
    checkpointing does (Orbax, PyTorch DCP's ``async_save``). A kill before
    a rename leaves the previous file under the name. Once a task fails,
    those queued after it (pointing ``last_checkpoint`` at the file that
    failed, deleting the older one) are dropped."""

    def __init__(self) -> None:
        self._executor: Optional[ThreadPoolExecutor] = None
        self._futures: List[Future] = []
        self._failed = False

    def submit(self, fn: Callable, *args) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                1, thread_name_prefix='checkpoint-finisher')
        self._futures.append(self._executor.submit(self._run, fn, args))

    def _run(self, fn: Callable, args: tuple) -> None:
        if self._failed:
            return
        try:
            fn(*args)
        except BaseException:
            self._failed = True
            raise

    def wait(self) -> None:
        """Return once everything handed over is done; raise the first
        error of it."""
        futures, self._futures = self._futures, []
        try:
            for future in futures:
                future.result()
        finally:
            self._failed = False

    def _forget_after_fork(self) -> None:
        # the thread is the parent's: a child starts its own
        self._executor, self._futures, self._failed = None, [], False


FINISHER = BackgroundFinisher()
if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=FINISHER._forget_after_fork)


def write_atomically(
        path: str,
        data: Union[bytes, str],
        write: Callable[[object, bytes], None] = write_file_contents,
        background: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    Args:
        path (str): The file to write.
        data (bytes | str): Its contents (str is written as UTF-8).
        write (callable): ``write(file, data)`` puts the bytes into the open
            temporary file.
        background (bool): Write the temporary file here, and leave its
            fsync and rename to :data:`FINISHER` (``FINISHER.wait()``
            returns once it is in place). Defaults to False.

    Raises:
        CheckpointSaveError: The write failed; ``path`` is untouched and the
            temporary file is gone (raised by ``FINISHER.wait()`` where the
            fsync or rename failed in the background).
    """
    if isinstance(data, str):
        data = data.encode('utf-8')
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temp = temp_path_for(path)
    size = len(data)
    try:
        with open(temp, 'wb') as file:
            write(file, data)
            file.flush()
            if not background:
                os.fsync(file.fileno())
    except OSError as error:
        _remove_and_raise(temp, path, size, error)
    if background:
        FINISHER.submit(_make_durable, temp, path, size, True)
    else:
        _make_durable(temp, path, size, False)


def _make_durable(temp: str, path: str, size: int, fsync_file: bool) -> None:
    try:
        if fsync_file:
            fd = os.open(temp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(temp, path)
        fsync_folder(osp.dirname(osp.abspath(path)))
    except OSError as error:
        _remove_and_raise(temp, path, size, error)


def _remove_and_raise(temp: str, path: str, size: int,
                      error: OSError) -> None:
    try:
        os.remove(temp)
    except FileNotFoundError:
        pass
    raise CheckpointSaveError(
        error.errno, save_error_message(path, size, error)) from error


def save_error_message(path: str, size: int, error: OSError) -> str:
    """What a failed write says: the file, why, the folder's free space and
    what the checkpoint needs."""
    folder = osp.dirname(osp.abspath(path))
    try:
        free = _size_text(shutil.disk_usage(folder).free)
    except OSError:
        free = 'unknown'
    reason = os.strerror(error.errno) if error.errno else str(error)
    hint = ('the disk is full' if error.errno == errno.ENOSPC else
            'the disk reported an error')
    return (f'Could not save checkpoint {osp.basename(path)} in {folder} '
            f'({reason}: {hint}): {free} free there, the checkpoint needs '
            f'{_size_text(size)}. Its partial file was deleted; the previous '
            f'checkpoint and {LAST_CHECKPOINT} are untouched. Free space (or '
            'use another --work-dir, with the checkpoints copied there) and '
            'resume with tools/train.py CONFIG --resume.')


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes are atomic (see
    :func:`write_atomically`); what our CheckpointHook writes through.

    Args:
        background (bool): Leave the fsync and rename of each write to
            :data:`FINISHER` (the hook waits for it before the next save and
            at the end). Defaults to False: done when ``put`` returns.
    """

    def __init__(self, background: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.background = background

    def _write(self, file, data: bytes) -> None:
        """Puts the bytes into the open temporary file (a test writes them
        in slow chunks, to be killed in the middle)."""
        write_file_contents(file, data)

    def put(self, obj: bytes, filepath) -> None:
        write_atomically(str(filepath), obj, self._write, self.background)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        write_atomically(str(filepath), obj.encode(encoding), self._write,
                         self.background)


register_backend('atomic_local', AtomicLocalBackend, force=True)


def remove_leftover_temp_files(folder: str) -> List[str]:
    """Delete the temporary files of writes that were killed (those of a
    process still alive on this machine are left to it); the removed
    paths."""
    removed = []
    for path in glob.glob(osp.join(glob.escape(folder), f'.*{TEMP_INFIX}*')):
        match = _TEMP_PATTERN.match(osp.basename(path))
        if match is None or _process_alive(int(match.group(1))):
            continue
        try:
            os.remove(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers: no write of ours is under way
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_checkpoint_file(path: str) -> None:
    """Raise :class:`DamagedCheckpointError` unless ``path`` is a complete
    checkpoint file, judged from its zip central directory (no load).

    Files of torch's legacy format (not zip) are accepted on their first
    bytes. The message names the file, its size and "truncated or not a
    checkpoint".
    """
    if not osp.isfile(path):
        raise DamagedCheckpointError(f'{path}: no such checkpoint file')
    size = osp.getsize(path)
    reason = None
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            if not any(e.filename.endswith('data.pkl') for e in entries):
                reason = 'a zip archive without data.pkl'
            elif any(e.header_offset + e.compress_size > size
                     for e in entries):
                reason = 'its entries run past the end of the file'
    except zipfile.BadZipFile as error:
        with open(path, 'rb') as file:
            head = file.read(len(_LEGACY_TORCH_MAGIC))
        if head != _LEGACY_TORCH_MAGIC:
            reason = f'no zip central directory ({error})'
    except OSError as error:
        reason = f'unreadable ({error})'
    if reason is not None:
        raise DamagedCheckpointError(
            f'{path} ({size} bytes) is truncated or not a checkpoint: '
            f'{reason}')


def is_good_checkpoint(path: str) -> bool:
    try:
        check_checkpoint_file(path)
    except DamagedCheckpointError:
        return False
    return True


def _read_last_checkpoint(work_dir: str) -> Optional[str]:
    pointer = osp.join(work_dir, LAST_CHECKPOINT)
    if not osp.isfile(pointer):
        return None
    with open(pointer) as file:
        named = file.read().strip()
    if not named:
        return None
    # a work dir moved elsewhere: its pointer names the old place
    return named if osp.isfile(named) else osp.join(work_dir,
                                                    osp.basename(named))


def resume_candidates(work_dir: str) -> List[str]:
    """The checkpoints a run could resume from, in the order tried: the one
    ``last_checkpoint`` names, the work dir's ``epoch_*``/``iter_*`` files
    (newest first), then its ``best_*`` files (no optimizer state)."""

    def newest_first(*patterns: str) -> List[str]:
        paths = [
            path for pattern in patterns
            for path in glob.glob(osp.join(glob.escape(work_dir), pattern))
        ]
        return sorted(paths, key=lambda p: (osp.getmtime(p), p),
                      reverse=True)

    ordered = [_read_last_checkpoint(work_dir)]
    ordered += newest_first('epoch_*.pth', 'iter_*.pth')
    ordered += newest_first('best_*.pth')
    seen, candidates = set(), []
    for path in ordered:
        if path is None or not osp.exists(path):
            continue
        key = osp.realpath(path)
        if key not in seen:
            seen.add(key)
            candidates.append(path)
    return candidates


def find_resumable_checkpoint(
        work_dir: str,
        warn: Callable[[str], None] = print) -> Optional[str]:
    """The first good checkpoint of :func:`resume_candidates`; each damaged
    one passed over is named through ``warn``. None: there is none."""
    for path in resume_candidates(work_dir):
        try:
            check_checkpoint_file(path)
        except DamagedCheckpointError as error:
            warn(f'Not resuming from {error}; trying an older checkpoint')
            continue
        if osp.basename(path).startswith('best_'):
            warn(f'Resuming from {path}, a best-score checkpoint: it holds '
                 'no optimizer state (momentum starts anew)')
        return path
    return None


def damaged_checkpoint_message(path: str, error: Exception) -> str:
    """``error`` and the newest good checkpoint beside ``path`` (or that
    there is none)."""
    good = find_resumable_checkpoint(osp.dirname(osp.abspath(path)),
                                     warn=lambda _: None)
    advice = (f'The newest good checkpoint there is {good}.' if good else
              'There is no good checkpoint beside it.')
    return f'{error}. {advice}'
