"""A seeded detector whose outputs are not degenerate, for deploy tests.

BatchNorm statistics are measured on forward passes of random images
(arbitrary ones let activations grow layer after layer until the outputs
saturate), then moved a little, and the implicit values moved, so that
folding them has something to fold.
"""
from pathlib import Path
from typing import Tuple, Union

import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from torch.nn.modules.batchnorm import _BatchNorm

import mmyolo_ext  # noqa: F401

from helpers.paths import ROOT
DEMO_CONFIG = ROOT / 'configs' / 'yolov7_tiny_demo.py'


def seeded_detector(config: Union[str, Path, Config] = DEMO_CONFIG,
                    seed: int = 0,
                    stats_shape: Tuple[int, int] = (160, 160),
                    init_weights: bool = True):
    """The config's detector with seeded weights and measured BN statistics.

    ``init_weights=False`` keeps PyTorch's default initialization (seeded
    too), which spares a large model mmengine's per-parameter init log.

    Returns:
        tuple: ``(model, cfg)``, the model in eval mode.
    """
    cfg = config if isinstance(config, Config) else Config.fromfile(
        str(config))
    torch.manual_seed(seed)  # init_weights draws from the global generator
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    if init_weights:
        model.init_weights()
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(2, 3, *stats_shape, generator=gen), mode='tensor')
    for norm in norms:
        norm.momentum = 0.03
        std = norm.running_var.sqrt()
        norm.running_mean.add_(
            torch.randn(std.shape, generator=gen) * 0.1 * std)
        norm.running_var.mul_(torch.rand(std.shape, generator=gen) + 0.5)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if 'implicit' in name:
                tensor.add_(torch.randn(tensor.shape, generator=gen) * 0.1)
    return model.eval(), cfg
