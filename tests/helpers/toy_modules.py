"""A minimal mmengine model and dataset, to test the runner-level fixes
(resume, CPU launcher) independently of the detection models."""
import os

import torch
from mmengine.dataset import BaseDataset
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, HOOKS, MODELS

KILLED_EXIT_CODE = 57


@MODELS.register_module()
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


@DATASETS.register_module()
class CompatToyDataset(BaseDataset):
    """32 samples of y = x . w + 1 with a fixed w."""

    def __init__(self, **kwargs) -> None:
        super().__init__(serialize_data=False, **kwargs)

    def load_data_list(self):
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(32, 4, generator=gen)
        y = x @ torch.tensor([[1.], [-2.], [3.], [0.5]]) + 1
        return [dict(inputs=xi, targets=yi) for xi, yi in zip(x, y)]


@HOOKS.register_module()
class KillAfterIterHook(Hook):
    """Ends the process abruptly (as a kill would) after the iteration given
    by the environment variable TOY_KILL_AT, once that iteration's
    checkpoint is written. Does nothing when the variable is unset."""

    priority = 'LOWEST'  # after CheckpointHook

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if str(runner.iter + 1) == os.environ.get('TOY_KILL_AT'):
            os._exit(KILLED_EXIT_CODE)
