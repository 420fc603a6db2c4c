"""Our models built from their configs, and the official layer graphs of the
manifests executed with plain tensor operations (:func:`run_manifest_graph`):
the reference the model, converter and deploy tests compare against.

The manifests (``tests/data/manifests``, copied from the reference vectors)
list every official layer with its module type, inputs (``from``) and
arguments, and every state-dict key and shape; each layer type follows the
official semantics.
"""
import json
import math
from collections import OrderedDict
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import Tensor

import mmyolo_ext  # noqa: F401  (registers the modules)
from mmyolo_ext.deploy.official_weights import convert_official_state_dict

from helpers.paths import MANIFESTS, ROOT

# our arch name -> official cfg name
ARCH_CFGS = OrderedDict(
    tiny='yolov7-tiny', l='yolov7', x='yolov7x', w6='yolov7-w6',
    e6='yolov7-e6', d6='yolov7-d6', e6e='yolov7-e6e')
BN_EPS = 1e-3


def load_manifest(arch: str, kind: str) -> dict:
    """The manifest of our ``arch`` ('tiny', 'l', ...) and ``kind``."""
    path = MANIFESTS / f'state_dict_{ARCH_CFGS[arch]}_{kind}.json'
    with open(path) as f:
        return json.load(f)


def build_model(arch: str,
                device: str = 'cpu',
                with_loss: bool = False,
                num_classes: Optional[int] = None):
    """Build our model of ``arch`` from its base config."""
    from mmyolo.registry import MODELS
    cfg = Config.fromfile(
        str(ROOT / 'configs' / '_base_' / 'models' / f'yolov7_{arch}.py'))
    init_default_scope(cfg.default_scope)
    if not with_loss:
        cfg.model.bbox_head.loss = None
    if num_classes is not None:
        cfg.model.bbox_head.head_module.num_classes = num_classes
    with torch.device(device):
        return MODELS.build(cfg.model)


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def random_official_state_dict(manifest: dict,
                               seed: int = 0) -> 'OrderedDict[str, Tensor]':
    """An official state dict with the manifest's keys and shapes and random
    values that keep activations well scaled through the network."""
    gen = torch.Generator().manual_seed(seed)
    state: 'OrderedDict[str, Tensor]' = OrderedDict()
    for key, shape, dtype in manifest['state_dict']:
        name = key.rsplit('.', 1)[-1]
        if name == 'num_batches_tracked':
            value = torch.zeros(shape, dtype=torch.int64)
        elif name == 'anchors':
            value = torch.tensor(manifest['anchors_grid'])
        elif name == 'anchor_grid':
            value = torch.tensor(manifest['anchors_px']).view(shape)
        elif name == 'implicit':
            mean = 1. if '.im.' in key else 0.
            value = mean + 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            value = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
        elif name == 'running_var' or (name == 'weight' and len(shape) == 1):
            value = 0.5 + torch.rand(shape, generator=gen)
        else:  # BN bias / running_mean, conv bias
            value = 0.1 * torch.randn(shape, generator=gen)
        state[key] = value
    return state


def load_converted(model: torch.nn.Module,
                   official: Dict[str, Tensor]) -> List[str]:
    """Convert ``official`` and load it into ``model`` (assigning the
    tensors, so a model built on the meta device becomes real). Returns the
    missing keys; unexpected keys fail."""
    converted, _ = convert_official_state_dict(official, model)
    result = model.load_state_dict(converted, strict=False, assign=True)
    assert not result.unexpected_keys
    return list(result.missing_keys)


def official_decoded_order(head, raw_maps):
    """Our decoded boxes (cx, cy, w, h) and scores, reordered from (level,
    cell, anchor) to the official (level, anchor, cell)."""
    boxes, scores = head.decode(raw_maps)
    cxcywh = torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2,
                        boxes[..., 2:] - boxes[..., :2]], dim=-1)
    rows = torch.cat([cxcywh, scores], dim=-1)
    out, start = [], 0
    for raw in raw_maps:
        bs, _, ny, nx = raw.shape
        count = ny * nx * head.num_base_priors
        level = rows[:, start:start + count].reshape(bs, ny, nx,
                                                     head.num_base_priors, -1)
        out.append(level.permute(0, 3, 1, 2, 4).reshape(bs, count, -1))
        start += count
    return torch.cat(out, dim=1)


def official_grid_forward(raw_maps, anchors, strides):
    """The official IDetect inference forward (``--grid``), one-level loop as
    in ``models/yolo.py``, on the raw ``(bs, na * no, ny, nx)`` maps:
    ``x.view(bs, na, no, ny, nx).permute(0, 1, 3, 4, 2)``, decoded, then
    ``view(bs, -1, no)`` and concatenated over levels."""
    z = []
    for x, level_anchors, stride in zip(raw_maps, anchors, strides):
        bs, _, ny, nx = x.shape
        na = len(level_anchors)
        x = x.view(bs, na, -1, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
        yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx),
                                indexing='ij')
        grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2).float()
        anchor_grid = torch.tensor(level_anchors).view(1, na, 1, 1, 2)
        y = x.sigmoid()
        y[..., 0:2] = (y[..., 0:2] * 2. - 0.5 + grid) * stride
        y[..., 2:4] = (y[..., 2:4] * 2)**2 * anchor_grid
        z.append(y.view(bs, -1, y.shape[-1]))
    return torch.cat(z, 1)


# --------------------------------------------------------------------------
# the official layer graph, executed from a manifest


def _act(x: Tensor, leaky: bool) -> Tensor:
    return F.leaky_relu(x, 0.1) if leaky else F.silu(x)


def _bn(x: Tensor, sd: Dict[str, Tensor], prefix: str) -> Tensor:
    return F.batch_norm(x, sd[prefix + 'running_mean'],
                        sd[prefix + 'running_var'], sd[prefix + 'weight'],
                        sd[prefix + 'bias'], False, 0., BN_EPS)


def _conv(x: Tensor, sd, prefix: str, stride: int, leaky: bool) -> Tensor:
    weight = sd[prefix + 'conv.weight']
    x = F.conv2d(x, weight, sd.get(prefix + 'conv.bias'), stride,
                 weight.shape[-1] // 2)
    if prefix + 'bn.weight' in sd:
        x = _bn(x, sd, prefix + 'bn.')
    return _act(x, leaky)


def _sppcspc(x: Tensor, sd, p: str, leaky: bool) -> Tensor:
    x1 = _conv(_conv(_conv(x, sd, p + 'cv1.', 1, leaky), sd, p + 'cv3.', 1,
                     leaky), sd, p + 'cv4.', 1, leaky)
    pooled = [x1] + [F.max_pool2d(x1, k, 1, k // 2) for k in (5, 9, 13)]
    y1 = _conv(_conv(torch.cat(pooled, 1), sd, p + 'cv5.', 1, leaky), sd,
               p + 'cv6.', 1, leaky)
    y2 = _conv(x, sd, p + 'cv2.', 1, leaky)
    return _conv(torch.cat([y1, y2], 1), sd, p + 'cv7.', 1, leaky)


def _downc(x: Tensor, sd, p: str, leaky: bool) -> Tensor:
    down = _conv(_conv(x, sd, p + 'cv1.', 1, leaky), sd, p + 'cv2.', 2,
                 leaky)
    return torch.cat(
        [down, _conv(F.max_pool2d(x, 2, 2), sd, p + 'cv3.', 1, leaky)], 1)


def _repconv(x: Tensor, sd, p: str, stride: int, leaky: bool) -> Tensor:
    out = _bn(F.conv2d(x, sd[p + 'rbr_dense.0.weight'], None, stride, 1), sd,
              p + 'rbr_dense.1.')
    out = out + _bn(
        F.conv2d(x, sd[p + 'rbr_1x1.0.weight'], None, stride, 0), sd,
        p + 'rbr_1x1.1.')
    if p + 'rbr_identity.weight' in sd:
        out = out + _bn(x, sd, p + 'rbr_identity.')
    return _act(out, leaky)


def _reorg(x: Tensor) -> Tensor:
    return torch.cat([
        x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2],
        x[..., 1::2, 1::2]
    ], 1)


def run_manifest_graph(manifest: dict, sd: Dict[str, Tensor],
                       x: Tensor) -> List[Tensor]:
    """Execute the official layer graph in eval mode (BatchNorm running
    statistics); the detect layer returns its raw maps ``(bs, na * no, ny,
    nx)``: the lead maps, then (IAuxDetect) the auxiliary maps."""
    outputs: List[Tensor] = []
    for index, module, source, _, args in manifest['layers']:
        def resolve(s):
            return outputs[s] if s >= 0 else outputs[index + s]

        inputs = [resolve(s) for s in source] if isinstance(
            source, list) else resolve(source) if index else x
        p = f'model.{index}.'
        leaky = 'LeakyReLU' in str(args[-1]) if args else False
        if module == 'Conv':
            out = _conv(inputs, sd, p, args[3], leaky)
        elif module == 'Concat':
            out = torch.cat(inputs, args[0])
        elif module == 'Shortcut':
            out = inputs[0] + inputs[1]
        elif module == 'MP':
            out = F.max_pool2d(inputs, 2, 2)
        elif module == 'SP':
            out = F.max_pool2d(inputs, args[0], 1, args[0] // 2)
        elif module == 'nn.Upsample':
            out = F.interpolate(inputs, scale_factor=2., mode='nearest')
        elif module == 'ReOrg':
            out = _reorg(inputs)
        elif module == 'SPPCSPC':
            out = _sppcspc(inputs, sd, p, leaky)
        elif module == 'DownC':
            out = _downc(inputs, sd, p, leaky)
        elif module == 'RepConv':
            out = _repconv(inputs, sd, p, args[3], leaky)
        elif module in ('IDetect', 'IAuxDetect', 'Detect'):
            nl = manifest['nl']
            out = []
            for i in range(nl):
                feat = inputs[i]
                if p + f'ia.{i}.implicit' in sd:
                    feat = feat + sd[p + f'ia.{i}.implicit']
                feat = F.conv2d(feat, sd[p + f'm.{i}.weight'],
                                sd[p + f'm.{i}.bias'])
                if p + f'im.{i}.implicit' in sd:
                    feat = feat * sd[p + f'im.{i}.implicit']
                out.append(feat)
            if module == 'IAuxDetect':
                out += [
                    F.conv2d(inputs[nl + i], sd[p + f'm2.{i}.weight'],
                             sd[p + f'm2.{i}.bias']) for i in range(nl)
                ]
            return out
        else:
            raise NotImplementedError(module)
        outputs.append(out)
    raise AssertionError('no detect layer in the manifest')


def eval_with_aux(model: torch.nn.Module) -> torch.nn.Module:
    """Training mode (the neck computes the auxiliary maps) with BatchNorm
    in eval mode (running statistics), as the reference graph runs."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model
