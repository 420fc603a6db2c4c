"""Count the bad images met per epoch, and summarize them at the end."""
from collections import Counter
from typing import Dict, List, Optional, Tuple

from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmyolo_ext.datasets.bad_images import BadImageLog
from mmyolo_ext.registry import HOOKS


@HOOKS.register_module()
class BadImageReportHook(Hook):
    """Logs, after each training epoch and each validation, how many image
    loads failed (and were skipped or replaced) and which files; and at the
    end of the run the bad images of the whole run.

    The loading transform
    (:class:`~mmyolo_ext.datasets.TolerantLoadImageFromFile`) records each
    bad load in the run's :class:`~mmyolo_ext.datasets.bad_images.BadImageLog`
    from whichever dataloader worker meets it; this hook starts that record
    before the workers exist and reads it in the main process.

    Attributes:
        epoch_counts (list[dict]): Per training epoch and per validation:
            ``stage``, ``epoch`` (from 1), ``loads`` (bad loads), ``images``
            (distinct files).
        bad_images (dict[str, str]): Every bad file of the run and why.
    """

    priority = 'LOW'
    _CHECKPOINT_KEY = 'bad_image_report'

    def __init__(self) -> None:
        self.epoch_counts: List[Dict] = []
        self.bad_images: Dict[str, str] = {}
        self._log: Optional[BadImageLog] = None
        self._offset = 0
        self._pending: List[Tuple[str, str]] = []  # this epoch's, so far

    def before_run(self, runner: Runner) -> None:
        self._log = BadImageLog.start_new()
        self._offset = 0
        self._pending = []

    def _read_new_events(self) -> List[Tuple[str, str]]:
        events, self._offset = self._log.read(self._offset)
        return events

    def before_save_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        # a run resumed from this checkpoint (mid-epoch too) goes on with
        # the counts so far
        if self._log is not None:
            self._pending += self._read_new_events()
        checkpoint[self._CHECKPOINT_KEY] = dict(
            epoch_counts=self.epoch_counts, bad_images=self.bad_images,
            pending=self._pending)

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        state = checkpoint.get(self._CHECKPOINT_KEY)
        if state:
            self.epoch_counts = list(state['epoch_counts'])
            self.bad_images = dict(state['bad_images'])
            self._pending = [tuple(event) for event in state['pending']]

    def _collect(self, runner: Runner, stage: str, epoch: int) -> None:
        if self._log is None:  # e.g. only validation was run
            self.before_run(runner)
        events = self._pending + self._read_new_events()
        self._pending = []
        paths = Counter(path for path, _ in events)
        for path, reason in events:
            self.bad_images.setdefault(path, reason)
        self.epoch_counts.append(
            dict(stage=stage, epoch=epoch, loads=len(events),
                 images=len(paths)))
        if events:
            action = ('skipped' if stage == 'train' else
                      'grey placeholders')
            listing = ', '.join(f'{p} (x{n})' for p, n in paths.items())
            runner.logger.warning(
                f'{stage} epoch {epoch}: {len(events)} bad image loads '
                f'of {len(paths)} files ({action}): {listing}')

    # epochs numbered as mmengine's log numbers them (from 1): a training
    # epoch's counter moves on after its hooks, a validation's before
    def after_train_epoch(self, runner: Runner) -> None:
        self._collect(runner, 'train', runner.epoch + 1)

    def after_val_epoch(self, runner: Runner, metrics=None) -> None:
        self._collect(runner, 'val', runner.epoch)

    def after_test_epoch(self, runner: Runner, metrics=None) -> None:
        self._collect(runner, 'test', runner.epoch)

    def after_run(self, runner: Runner) -> None:
        if not self.bad_images:
            runner.logger.info('bad images: none met in this run')
            return
        lines = '\n'.join(f'  {p}: {r}' for p, r in self.bad_images.items())
        runner.logger.warning(
            f'bad images: {len(self.bad_images)} files could not be loaded '
            f'in this run (run tools/analysis_tools/check_data.py CONFIG to list every bad '
            f'image and annotation):\n{lines}')
