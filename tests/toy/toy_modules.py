"""A minimal mmengine model and dataset, to test the runner-level fixes
(resume, CPU launcher) independently of the detection models."""
import torch
from mmengine.dataset import BaseDataset
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, MODELS


@MODELS.register_module()
class CompatToyModel(BaseModel):

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, inputs, targets, mode='tensor'):
        inputs = torch.stack(inputs)
        targets = torch.stack(targets)
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
