from mmengine.runner import EpochBasedTrainLoop

from mmyolo_ext.registry import LOOPS


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """:class:`EpochBasedTrainLoop` that resumes in the middle of an epoch.

    mmengine's loop, resumed from a checkpoint written mid-epoch (an
    iteration-interval checkpoint, or the last one before a crash), trains
    the whole interrupted epoch again while its iteration count goes on, so
    the run does more steps than planned and on different batches. Here the
    batches the epoch had already trained are drawn from the dataloader and
    discarded, so training continues with the very batch that came next: the
    sampler order and the data workers' random draws (augmentations) are
    those of an uninterrupted run. Exact as long as the workers are created
    anew each epoch (``persistent_workers=False``); with persistent workers
    the order of the images is the same, their augmentations are not.

    Args: those of :class:`EpochBasedTrainLoop`.
    """

    def run_epoch(self) -> None:
        """Iterate one epoch, skipping the batches trained before a resume."""
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        trained = self._iter - self._epoch * len(self.dataloader)
        if trained > 0:
            self.runner.logger.info(
                f'Resuming inside epoch {self._epoch + 1}: skipping its '
                f'{trained} already trained batches')
        for idx, data_batch in enumerate(self.dataloader):
            if idx < trained:
                continue
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1
