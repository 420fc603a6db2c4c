"""mmengine's CheckpointHook made crash-safe, and saving on preemption."""
import os.path as osp
import signal
from contextlib import contextmanager
from typing import List, Optional

import torch
from mmengine.dist import all_reduce, is_distributed, is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.runner import BaseLoop, EpochBasedTrainLoop, Runner

from mmyolo_ext.registry import HOOKS
from ..checkpoint_files import (FINISHER, LAST_CHECKPOINT, AtomicLocalBackend,
                                CheckpointSaveError,
                                remove_leftover_temp_files, write_atomically)
from ..preemption import (PreemptionSignals, exit_code,
                          keep_workers_through_stops)

PREEMPTION_CKPT_KEY = 'preemption_ckpt'  # message hub: its file, retired later


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """:class:`mmengine.hooks.CheckpointHook` whose checkpoints survive a
    kill at any moment, and which saves when the run is told to stop.

    ``import mmyolo_ext`` puts it in place of mmengine's under the name
    ``CheckpointHook`` (see :mod:`mmyolo_ext.engine.compat`), so every config
    keeps its ``default_hooks.checkpoint`` as it is. Its arguments and files
    are mmengine's; what differs:

    * Every file (periodic, best, ``last_checkpoint``) is written to a
      temporary file in the same folder, fsynced and renamed onto its name
      (:class:`~mmyolo_ext.engine.checkpoint_files.AtomicLocalBackend`),
      where mmengine writes in place. Training goes on once the file is
      written; its fsync and rename, then ``last_checkpoint`` and the
      retirements, follow in a background thread, in that order (the next
      save, the end of training and a stop wait for them).
    * ``last_checkpoint`` is updated only once its checkpoint is complete,
      and a checkpoint retired by ``max_keep_ckpts`` or by a new best is
      deleted only after that (mmengine deletes it first: a kill during
      the save, with ``max_keep_ckpts=1``, left nothing to resume from).
    * Temporary files of killed writes are deleted when training starts.
    * A save that fails (full disk, I/O error) leaves the previous files as
      they are and stops the run with an error naming the folder, its free
      space and the checkpoint's size.
    * SIGTERM, or a first SIGINT: the current iteration is finished, a
      checkpoint of it is written (``iter_<n>.pth``; with DDP every process
      stops at the same iteration, the first one writes), the log says how
      to resume, and the process exits with 143 (SIGTERM) or 130 (SIGINT).
      The next regular checkpoint retires that file.

    Other file backends (``backend_args`` for object stores, whose uploads
    are already all-or-nothing) are used as given.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._signals = PreemptionSignals()
        self._saved_iters: Optional[int] = None  # of the last save

    def before_train(self, runner: Runner) -> None:
        out_dir = self.out_dir or runner.work_dir
        if (self.file_client_args is None and self.backend_args is None
                and '://' not in str(out_dir)):
            self.backend_args = dict(backend='atomic_local', background=True)
        super().before_train(runner)
        self._files = self.file_backend  # not the deferring one of best
        if is_main_process() and isinstance(self.file_backend,
                                            AtomicLocalBackend):
            for folder in {str(self.out_dir), runner.work_dir}:
                for path in remove_leftover_temp_files(folder):
                    runner.logger.info(
                        f'Deleted {path}, the temporary file of a save that '
                        'was interrupted')
        if self._signals.install():
            for loop in (runner.train_loop, getattr(runner, '_val_loop',
                                                    None)):
                if isinstance(loop, BaseLoop):
                    keep_workers_through_stops(loop.dataloader)

    def after_train(self, runner: Runner) -> None:
        self._signals.uninstall()
        self._wait_for_saves(runner)
        super().after_train(runner)

    def after_run(self, runner: Runner) -> None:
        self._signals.uninstall()
        self._wait_for_saves(runner)

    def _wait_for_saves(self, runner: Runner) -> None:
        """Return once the saves handed to the background are on disk;
        stop the run where one failed."""
        try:
            FINISHER.wait()
        except CheckpointSaveError as error:
            runner.logger.error(str(error))
            raise

    def _after_saves(self, fn, *args) -> None:
        """Call ``fn`` once the checkpoints written so far are in place."""
        if getattr(self._files, 'background', False):
            FINISHER.submit(fn, *args)
        else:
            fn(*args)

    def after_train_iter(self,
                         runner: Runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        super().after_train_iter(runner, batch_idx, data_batch, outputs)
        signum = self._stop_signal()
        if signum is not None:
            self._stop(runner, signum)

    def _stop_signal(self) -> Optional[int]:
        """The stop signal this process, or any process of the run, got."""
        received = self._signals.received or 0
        if is_distributed():
            flag = torch.tensor([received], dtype=torch.int64)
            all_reduce(flag, op='max')
            received = int(flag.item())
        return received or None

    def _stop(self, runner: Runner, signum: int) -> None:
        step = runner.iter + 1
        if self._saved_iters != step:  # not saved after this iteration yet
            filename = f'iter_{step}.pth'
            runner.message_hub.update_info(
                PREEMPTION_CKPT_KEY,
                self.file_backend.join_path(self.out_dir, filename))
            self._write(runner, filename,
                        dict(epoch=runner.epoch, iter=step), retire=[])
        self._signals.uninstall()
        self._wait_for_saves(runner)
        name = signal.Signals(signum).name
        config = getattr(runner.cfg, 'filename', None) or 'CONFIG'
        runner.logger.warning(
            f'Stopped by {name} after iteration {step} (epoch '
            f'{runner.epoch + 1}): its checkpoint is {self.last_ckpt}. '
            f'Resume with: python tools/train.py {config} --work-dir '
            f'{runner.work_dir} --resume')
        if type(runner.train_loop) is EpochBasedTrainLoop:
            runner.logger.warning(
                "mmengine's EpochBasedTrainLoop trains an interrupted epoch "
                "again from its start; train_cfg.type="
                "'mmyolo_ext.ResumableEpochBasedTrainLoop' continues it")
        raise SystemExit(exit_code(signum))

    def _save_checkpoint_with_step(self, runner: Runner, step: int,
                                   meta: dict) -> None:
        # mmengine's bookkeeping of the kept checkpoints, except that the
        # one that drops out is deleted after the new one is in place
        retire = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                retire.append(
                    self.filename_tmpl.format(self.keep_ckpt_ids.popleft()))
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        preempted = runner.message_hub.get_info(PREEMPTION_CKPT_KEY)
        if preempted:
            retire.append(osp.basename(preempted))
            runner.message_hub.update_info(PREEMPTION_CKPT_KEY, None)
        self._write(runner, self.filename_tmpl.format(step), meta, retire)

    def _write(self, runner: Runner, filename: str, meta: dict,
               retire: List[str]) -> None:
        """Save the checkpoint, then point ``last_checkpoint`` at it, then
        delete the ``retire`` files."""
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        share = getattr(runner.optim_wrapper, 'share_pending_gradients', None)
        if share is not None:
            share()  # every process, before the first one saves
        self._wait_for_saves(runner)  # one save in flight at most
        try:
            runner.save_checkpoint(
                self.out_dir,
                filename,
                self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=self.by_epoch,
                backend_args=self.backend_args,
                **self.args)
        except CheckpointSaveError as error:
            runner.logger.error(str(error))
            raise
        self._saved_iters = meta.get('iter')
        if is_main_process():
            self._after_saves(self._point_and_retire, runner.work_dir,
                              str(self.last_ckpt), [
                                  self._files.join_path(self.out_dir, name)
                                  for name in retire if name != filename
                              ])

    def _point_and_retire(self, work_dir: str, checkpoint: str,
                          retire: List[str]) -> None:
        write_atomically(osp.join(work_dir, LAST_CHECKPOINT), checkpoint)
        for path in retire:
            self._remove(path)

    def _remove(self, path: str) -> None:
        if self._files.isfile(path):
            self._files.remove(path)
        elif self._files.isdir(path):  # deepspeed's checkpoints
            self._files.rmtree(path)

    def _save_best_checkpoint(self, runner: Runner, metrics: dict) -> None:
        # mmengine's, with the previous best deleted after the new one
        with self._removals_deferred() as deferred:
            super()._save_best_checkpoint(runner, metrics)
        for path in deferred:
            self._after_saves(self._remove, path)

    @contextmanager
    def _removals_deferred(self):
        backend, deferred = self.file_backend, []
        self.file_backend = _DeferredRemovals(backend, deferred)
        try:
            yield deferred
        finally:
            self.file_backend = backend


class _DeferredRemovals:
    """A file backend whose ``remove``/``rmtree`` only note the path."""

    def __init__(self, backend, deferred: list) -> None:
        self._backend, self._deferred = backend, deferred

    def remove(self, path) -> None:
        self._deferred.append(path)

    rmtree = remove

    def __getattr__(self, name):
        return getattr(self._backend, name)
