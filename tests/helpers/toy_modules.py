"""A minimal mmengine model and dataset, to test the runner-level fixes
(resume, CPU launcher, crash-safe checkpoints) independently of the
detection models; file backends that write slowly or fail as a full disk."""
import errno
import os
import time

import torch
from mmengine.dataset import BaseDataset
from mmengine.evaluator import BaseMetric
from mmengine.fileio import register_backend
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, HOOKS, METRICS, MODELS

from mmyolo_ext.engine.checkpoint_files import (FINISHER, AtomicLocalBackend,
                                                write_atomically)

KILLED_EXIT_CODE = 57


@MODELS.register_module(force=True)
class CompatToyModel(BaseModel):

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, inputs, targets, mode='tensor', **meta):
        # default_collate has stacked the samples already
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((out - targets)**2).mean())
        return out


@DATASETS.register_module(force=True)
class CompatToyDataset(BaseDataset):
    """32 samples of y = x . w + 1 with a fixed w."""

    def __init__(self, **kwargs) -> None:
        super().__init__(serialize_data=False, **kwargs)

    def load_data_list(self):
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(32, 4, generator=gen)
        y = x @ torch.tensor([[1.], [-2.], [3.], [0.5]]) + 1
        return [dict(inputs=xi, targets=yi) for xi, yi in zip(x, y)]


@HOOKS.register_module(force=True)
class KillAfterIterHook(Hook):
    """Ends the process abruptly (as a kill would) after the iteration given
    by the environment variable TOY_KILL_AT, once that iteration's
    checkpoint is written. Does nothing when the variable is unset."""

    priority = 'LOWEST'  # after CheckpointHook

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if str(runner.iter + 1) == os.environ.get('TOY_KILL_AT'):
            FINISHER.wait()  # the checkpoint's fsync and rename
            os._exit(KILLED_EXIT_CODE)


@DATASETS.register_module(force=True)
class ToyDatasetWithNaN(CompatToyDataset):
    """CompatToyDataset whose sample 5 has a NaN input: the batch holding it
    has a non-finite loss, so its optimizer step is skipped and counted."""

    def load_data_list(self):
        data_list = super().load_data_list()
        data_list[5]['inputs'] = torch.full_like(data_list[5]['inputs'],
                                                 float('nan'))
        return data_list


@HOOKS.register_module(force=True)
class SampleOrderHook(Hook):
    """Appends ``<iteration> <epoch> <sample indices>`` after each training
    iteration to the file named by TOY_ORDER_FILE (nothing when unset)."""

    priority = 'HIGHEST'

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        path = os.environ.get('TOY_ORDER_FILE')
        if path:
            indices = data_batch['sample_idx'].tolist()
            with open(path, 'a') as f:
                f.write(f'{runner.iter + 1} {runner.epoch} {indices}\n')


class SlowChunkedBackend(AtomicLocalBackend):
    """Writes a checkpoint in 256-byte chunks, a millisecond apart, so that
    a kill lands inside a write often."""

    def _write(self, file, data: bytes) -> None:
        for start in range(0, len(data), 256):
            file.write(data[start:start + 256])
            file.flush()
            time.sleep(0.001)


class FullDiskBackend(AtomicLocalBackend):
    """Fails the write of the file named ``fail_on`` as a full disk does:
    half of it is written, then ENOSPC."""

    def __init__(self, fail_on: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fail_on = fail_on

    def put(self, obj: bytes, filepath) -> None:
        if os.path.basename(str(filepath)) != self.fail_on:
            return super().put(obj, filepath)

        def write_half_then_fail(file, data: bytes) -> None:
            file.write(data[:len(data) // 2])
            file.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        write_atomically(str(filepath), obj, write_half_then_fail)


register_backend('toy_slow_chunked', SlowChunkedBackend, force=True)
register_backend('toy_full_disk', FullDiskBackend, force=True)


@METRICS.register_module(force=True)
class ToyScoreMetric(BaseMetric):
    """``toy/score``: minus the mean squared error of the predictions (the
    higher the better)."""

    default_prefix = 'toy'

    def process(self, data_batch, data_samples) -> None:
        for pred, target in zip(data_samples, data_batch['targets']):
            self.results.append(float(((pred - target)**2).mean()))

    def compute_metrics(self, results) -> dict:
        return dict(score=-sum(results) / len(results))
