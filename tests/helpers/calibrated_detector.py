"""A seeded YOLOv7 detector whose outputs look like a trained model's, and
the real photograph matplotlib ships, for the ONNX tests.

Seeded weights alone give degenerate outputs: activations grow layer after
layer until the scores saturate at 0 or 1 and boxes span thousands of
pixels. Here the BatchNorm statistics are measured on forward passes of
the photograph (mirrored and cropped views), and each output channel of
the head's 1x1 convs is then scaled and shifted so that on the photograph
box logits have mean 0 / std 0.5 (boxes near the anchors), objectness
logits mean -4 / std 2 and class logits mean 0 / std 2: a few dozen boxes
pass a 0.25 score, with
spread-out scores, overlapping boxes and several classes.
"""
from pathlib import Path
from typing import Tuple, Union

import cv2
import matplotlib
import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from torch.nn.modules.batchnorm import _BatchNorm

import mmyolo_ext  # noqa: F401

from helpers.paths import ROOT
DEMO_CONFIG = ROOT / 'configs' / 'yolov7_tiny_demo.py'
PHOTO = Path(matplotlib.get_data_path()) / 'sample_data' / 'grace_hopper.jpg'


def letterbox(image: np.ndarray, size: Tuple[int, int],
              pad_value: int = 114) -> np.ndarray:
    """``image`` resized to fit ``size`` (h, w) keeping its aspect ratio,
    centred on a ``pad_value`` canvas."""
    height, width = image.shape[:2]
    ratio = min(size[0] / height, size[1] / width)
    new_h, new_w = round(height * ratio), round(width * ratio)
    canvas = np.full((*size, 3), pad_value, dtype=np.uint8)
    top, left = (size[0] - new_h) // 2, (size[1] - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = cv2.resize(
        image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return canvas


def photo_views(size: Tuple[int, int] = (160, 160),
                extra: bool = False) -> torch.Tensor:
    """``(3, 3, h, w)`` RGB [0, 1]: the photograph, its mirror image and a
    crop of its upper left, each letterboxed to ``size``; with ``extra``
    three more views (lower right crop, grey, a small copy): ``(6, ...)``.
    """
    rgb = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)
    height, width = rgb.shape[:2]
    views = [rgb, rgb[:, ::-1], rgb[:height * 2 // 3, :width // 2]]
    if extra:
        grey = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY),
                            cv2.COLOR_GRAY2RGB)
        small = np.full_like(rgb, 114)
        small[:height // 2, :width // 2] = cv2.resize(
            rgb, (width // 2, height // 2))
        views += [rgb[height // 3:, width // 3:], grey, small]
    batch = np.stack([letterbox(np.ascontiguousarray(v), size)
                      for v in views])
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255


@torch.no_grad()
def calibrated_detector(config: Union[str, Path, Config] = DEMO_CONFIG,
                        seed: int = 0,
                        size: Tuple[int, int] = (160, 160),
                        cfg_options: dict = None):
    """The config's detector, seeded and calibrated on the photograph.

    Returns:
        tuple: ``(model, cfg)``, the model (unfused) in eval mode.
    """
    cfg = config if isinstance(config, Config) else Config.fromfile(
        str(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    torch.manual_seed(seed)  # init_weights draws from the global generator
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    model.init_weights()
    images = photo_views(size, extra=True)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    model(images, mode='tensor')
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in model.state_dict().items():
        if 'implicit' in name:  # something for the fusion to fold
            tensor.add_(torch.randn(tensor.shape, generator=gen) * 0.1)
    for norm in norms:
        norm.momentum = 0.03
    model.eval()
    head_module = model.bbox_head.head_module
    raw_maps = model(images, mode='tensor')
    attrib = head_module.num_out_attrib
    target_mean = torch.zeros(attrib)
    target_std = torch.full((attrib, ), 0.5)
    target_mean[4], target_std[4] = -4., 2.
    target_std[5:] = 2.
    for level, raw in enumerate(raw_maps[:head_module.num_levels]):
        conv = head_module.lead_convs[level]
        scale_m = head_module.implicit_m[level].implicit.view(-1)
        channels = raw.transpose(0, 1).reshape(raw.shape[1], -1)
        mean, std = channels.mean(1), channels.std(1).clamp(min=1e-6)
        want_mean = target_mean.repeat(head_module.num_base_priors)
        want_std = target_std.repeat(head_module.num_base_priors)
        # output = m * (W (x + a) + b): scaling W and b scales the output,
        # a bias shift moves it by m * shift
        factor = want_std / std
        conv.weight.mul_(factor.view(-1, 1, 1, 1))
        conv.bias.mul_(factor)
        conv.bias.add_((want_mean - mean * factor) / scale_m)
    return model, cfg
