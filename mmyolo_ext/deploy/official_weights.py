"""Loading official YOLOv7 checkpoints and mapping them onto our models.

The mapping is rule-based. Our backbone, neck and head register their
sub-modules in the order of the official layers, so walking a built model
yields its *official units* in official order: every ``ConvModule`` (an
official ``Conv``: ``conv`` / ``bn``) and every module with an
``official_key_map`` (one official layer with sub-modules: SPPCSPC, DownC,
RepConv, the detect layer), whose map renames the official sub-module names
to ours. The official layers that hold weights, in index order, pair one to
one with these units; shapes are checked on every key.
"""
import _compat_pickle
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from torch import Tensor

from mmyolo_ext.models.layers import RepConv

# official key: 'model.<layer index>.<sub-module path>.<tensor name>'
_LAYER_PREFIX = 'model.'


@dataclass
class OfficialUnit:
    """One of our modules that corresponds to one official layer.

    Attributes:
        path (str): Its name in the model (``named_modules``).
        key_map (dict): Official sub-module name -> ours (prefixes; a value
            of None drops the key).
        aux_only (bool): It exists only to feed the auxiliary head.
    """
    path: str
    key_map: Dict[str, Optional[str]]
    aux_only: bool


@dataclass
class ConversionReport:
    """What a conversion did besides copying tensors.

    Attributes:
        num_layers (int): Official layers with weights that were mapped.
        has_implicit (bool): The source has ImplicitA/M (training kind).
        has_aux (bool): The source has the P6 auxiliary head.
        filled_identity (list[str]): Our keys set to identity values (the
            implicit layers of a deploy checkpoint).
        expanded_fused (list[int]): Official layers stored fused (a conv
            with bias and no BatchNorm, a RepConv as ``rbr_reparam``),
            loaded as equivalent unfused tensors.
        missing_aux (list[str]): Our auxiliary-head keys the source lacks.
        anchors_px (list, optional): The source's anchors in pixels, per
            level ``[w, h]`` pairs, when it stores them.
        anchors_match (bool, optional): Whether they equal the model's.
    """
    num_layers: int = 0
    has_implicit: bool = False
    has_aux: bool = False
    filled_identity: List[str] = field(default_factory=list)
    expanded_fused: List[int] = field(default_factory=list)
    missing_aux: List[str] = field(default_factory=list)
    anchors_px: Optional[list] = None
    anchors_match: Optional[bool] = None


class _OfficialObject:
    """Stand-in for any class of the official code (or another non-tensor
    global) met while unpickling: it keeps the pickled state, so the
    tensors of a pickled model object can be collected without the
    official code installed, and it never runs code from the file."""

    def __init__(self, *args, **kwargs) -> None:
        self._args = args

    def __setstate__(self, state) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self._state = state


class _PlaceholderUnpickler(pickle.Unpickler):
    """Resolves the globals torch's safe loader allows (tensor rebuilding,
    dtypes, ``OrderedDict`` ...) and maps every other class to a fresh
    :class:`_OfficialObject` subclass named after it."""

    _allowed = None

    def find_class(self, module: str, name: str):
        # protocol-2 pickles (torch.save) name Python 2 modules
        # ('__builtin__'); map them as the default find_class does
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if _PlaceholderUnpickler._allowed is None:
            from torch._weights_only_unpickler import _get_allowed_globals
            _PlaceholderUnpickler._allowed = _get_allowed_globals()
        allowed = self._allowed.get(f'{module}.{name}')
        if allowed is not None:
            return allowed
        return type(name, (_OfficialObject, ), {'__module__': module})


class _PlaceholderPickleModule:
    """A ``pickle_module`` for :func:`torch.load` using the unpickler
    above."""
    Unpickler = _PlaceholderUnpickler
    __name__ = 'mmyolo_ext_placeholder_pickle'

    @staticmethod
    def load(file, **kwargs):
        return _PlaceholderUnpickler(file, **kwargs).load()


def _collect_module_tensors(obj, prefix: str,
                            out: 'OrderedDict[str, Tensor]') -> None:
    """``state_dict()`` of a pickled module whose classes are stand-ins."""
    state = getattr(obj, '__dict__', {})
    skipped = state.get('_non_persistent_buffers_set', set())
    for name, tensor in state.get('_parameters', {}).items():
        if tensor is not None:
            out[prefix + name] = tensor.detach()
    for name, tensor in state.get('_buffers', {}).items():
        if tensor is not None and name not in skipped:
            out[prefix + name] = tensor
    for name, child in state.get('_modules', {}).items():
        if child is not None:
            _collect_module_tensors(child, f'{prefix}{name}.', out)


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def load_official_state_dict(path: str) -> 'OrderedDict[str, Tensor]':
    """Read an official YOLOv7 checkpoint as a plain state dict.

    Accepts a file holding a plain state dict (``torch.save(
    model.state_dict())``) or an official checkpoint (a dict whose ``ema``
    or ``model`` entry is a pickled model object, as ``yolov7*.pt``); the
    official code need not be installed. ``ema`` is preferred when present,
    as the official loader does.

    Args:
        path (str): Checkpoint file.

    Returns:
        OrderedDict[str, Tensor]: Official keys (``model.<i>. ...``) and
        tensors as stored (float16 in released checkpoints).
    """
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError:
        obj = torch.load(
            path,
            map_location='cpu',
            weights_only=False,
            pickle_module=_PlaceholderPickleModule)
    if _is_state_dict(obj):
        return OrderedDict(obj)
    if isinstance(obj, dict):
        for entry in ('ema', 'model', 'state_dict'):
            value = obj.get(entry)
            if value is None:
                continue
            if _is_state_dict(value):
                return OrderedDict(value)
            state_dict: 'OrderedDict[str, Tensor]' = OrderedDict()
            _collect_module_tensors(value, '', state_dict)
            if state_dict:
                return state_dict
    raise ValueError(f'{path}: neither a state dict nor an official YOLOv7 '
                     "checkpoint (a dict with a model in 'ema' or 'model')")


def official_layers(
    state_dict: Dict[str, Tensor]
) -> 'OrderedDict[int, Dict[str, Tensor]]':
    """Group official keys by layer index, in index order.

    Returns:
        OrderedDict[int, dict]: layer index -> {sub key: tensor}.
    """
    layers: Dict[int, Dict[str, Tensor]] = {}
    for key, tensor in state_dict.items():
        index, _, sub = key[len(_LAYER_PREFIX):].partition('.')
        if not key.startswith(_LAYER_PREFIX) or not index.isdigit() or not sub:
            raise ValueError(f'{key!r} is not an official YOLOv7 key '
                             "('model.<layer index>.<name>')")
        layers.setdefault(int(index), {})[sub] = tensor
    return OrderedDict(sorted(layers.items()))


def official_units(model: nn.Module) -> List[OfficialUnit]:
    """Our modules that correspond to official layers, in official order."""
    units: List[OfficialUnit] = []

    def visit(module: nn.Module, path: str, aux_only: bool) -> None:
        aux_only = aux_only or getattr(module, 'official_aux_only', False)
        key_map = getattr(module, 'official_key_map', None)
        if key_map is not None or isinstance(module, ConvModule):
            units.append(OfficialUnit(path, dict(key_map or {}), aux_only))
            return
        for name, child in module.named_children():
            visit(child, f'{path}.{name}' if path else name, aux_only)

    visit(model, '', False)
    return units


def _map_sub_key(sub: str,
                 key_map: Dict[str, Optional[str]]) -> Optional[str]:
    """Rename the longest mapped prefix of ``sub`` (None: drop the key)."""
    parts = sub.split('.')
    for n in range(len(parts), 0, -1):
        prefix = '.'.join(parts[:n])
        if prefix in key_map:
            target = key_map[prefix]
            return None if target is None else '.'.join([target] + parts[n:])
    return sub


def _identity_bn(bias: Tensor, eps: float,
                 scale: float = 1.) -> Dict[str, Tensor]:
    """Eval-mode BatchNorm tensors computing ``scale * x + bias``."""
    return {
        'weight': torch.full_like(bias, scale),
        'bias': bias,
        'running_mean': torch.zeros_like(bias),
        'running_var': torch.full_like(bias, 1. - eps),
        'num_batches_tracked': torch.tensor(0),
    }


def _expand_fused_layer(subs: Dict[str, Tensor], unit: OfficialUnit,
                        model: nn.Module) -> Optional[Dict[str, Tensor]]:
    """Unfused official tensors equivalent to a layer stored fused, or None
    when nothing in it is fused (or our model is fused as well).

    A fused ``Conv`` (conv with bias, no BatchNorm; also inside SPPCSPC /
    DownC) gets an identity BatchNorm carrying the bias; a fused ``RepConv``
    (``rbr_reparam``) puts its kernel in the 3x3 branch and zeros in the 1x1
    and identity branches.
    """
    out = dict(subs)
    for sub in subs:
        if sub != 'conv.bias' and not sub.endswith('.conv.bias'):
            continue
        prefix = sub[:-len('conv.bias')]  # '' or e.g. 'cv2.'
        mapped = _map_sub_key(sub, unit.key_map)
        if mapped is None or f'{prefix}bn.weight' in subs:
            continue
        owner = mapped[:-len('conv.bias')].rstrip('.')
        try:
            module = model.get_submodule(
                f'{unit.path}.{owner}' if owner else unit.path)
        except AttributeError:  # not this architecture: reported later
            continue
        if (not isinstance(module, ConvModule)
                or not module.with_norm or module.conv.bias is not None):
            continue
        del out[sub]
        out.update((f'{prefix}bn.{k}', v) for k, v in _identity_bn(
            subs[sub], module.bn.eps).items())
    module = model.get_submodule(unit.path)
    if (isinstance(module, RepConv) and module.fused_conv is None
            and 'rbr_reparam.weight' in subs):
        weight = out.pop('rbr_reparam.weight')
        bias = out.pop('rbr_reparam.bias')
        zeros = torch.zeros_like(bias)
        eps = module.dense_branch.bn.eps
        out['rbr_dense.0.weight'] = weight
        out['rbr_1x1.0.weight'] = weight.new_zeros(*weight.shape[:2], 1, 1)
        out.update((f'rbr_dense.1.{k}', v)
                   for k, v in _identity_bn(bias, eps).items())
        out.update((f'rbr_1x1.1.{k}', v)
                   for k, v in _identity_bn(zeros, eps).items())
        if module.identity_branch is not None:
            out.update((f'rbr_identity.{k}', v)
                       for k, v in _identity_bn(zeros, eps, 0.).items())
    return out if out.keys() != subs.keys() else None


def _model_anchors_px(model: nn.Module) -> Optional[Tensor]:
    for module in model.modules():
        # IDetectHead: the config's anchors (the model may be on 'meta')
        anchors = getattr(module, 'config_anchors', None)
        if anchors is not None:
            return torch.tensor(anchors, dtype=torch.float32)
    return None


def _model_strides(model: nn.Module) -> Optional[Tensor]:
    for module in model.modules():
        strides = getattr(module, 'featmap_strides', None)
        if strides is not None:
            return torch.tensor([float(s) for s in strides])
    return None


def convert_official_state_dict(
        official: Dict[str, Tensor], model: nn.Module
) -> Tuple['OrderedDict[str, Tensor]', ConversionReport]:
    """Map an official state dict onto ``model``'s keys.

    Training and deploy checkpoints are both accepted: from a deploy
    checkpoint (plain ``Detect``) the implicit layers get their identity
    values (ImplicitA 0, ImplicitM 1), so the model computes the same
    function; a P6 deploy checkpoint has no auxiliary head, whose keys are
    then reported missing. Layers stored fused (the reference's
    ``Model.fuse()``) are expanded to equivalent unfused tensors; the
    implicit layers of such a checkpoint are already folded into the head
    convs, so they get identity values too.

    Args:
        official (dict[str, Tensor]): Official state dict.
        model (nn.Module): Our model (any device, ``meta`` included).

    Returns:
        tuple[OrderedDict, ConversionReport]: Our state dict (float tensors
        in the model's dtype) and what else was done.

    Raises:
        ValueError: The checkpoint does not fit the model (layer count,
            key or shape), with the first official key that does not fit.
    """
    layers = official_layers(official)
    report = ConversionReport()
    report.has_aux = any(
        sub.startswith('m2.') for subs in layers.values() for sub in subs)
    report.has_implicit = any(
        sub.startswith(('ia.', 'im.')) for subs in layers.values()
        for sub in subs)
    units = [
        unit for unit in official_units(model)
        if report.has_aux or not unit.aux_only
    ]
    if len(units) != len(layers):
        raise ValueError(
            f'the checkpoint has {len(layers)} layers with weights, the '
            f'model {len(units)} (with{"" if report.has_aux else "out"} '
            'auxiliary head): it is a different architecture')
    ours = model.state_dict()
    converted: 'OrderedDict[str, Tensor]' = OrderedDict()
    source_anchors = None
    for (index, subs), unit in zip(layers.items(), units):
        expanded = _expand_fused_layer(subs, unit, model)
        if expanded is not None:
            subs = expanded
            report.expanded_fused.append(index)
        for sub, tensor in subs.items():
            official_key = f'{_LAYER_PREFIX}{index}.{sub}'
            mapped = _map_sub_key(sub, unit.key_map)
            if mapped is None:
                if sub == 'anchors':
                    source_anchors = tensor.float()
                continue
            key = f'{unit.path}.{mapped}' if unit.path else mapped
            if key not in ours:
                raise ValueError(
                    f'{official_key} has no counterpart in the model '
                    f'(expected {key}): the checkpoint is a different '
                    'architecture')
            if tuple(ours[key].shape) != tuple(tensor.shape):
                raise ValueError(
                    f'{official_key} has shape {tuple(tensor.shape)}, the '
                    f'model\'s {key} {tuple(ours[key].shape)}: different '
                    'architecture or number of classes')
            converted[key] = (
                tensor.to(ours[key].dtype)
                if tensor.is_floating_point() else tensor.clone())
    report.num_layers = len(layers)

    # The reference's Model.fuse() folds ImplicitA/M into the head convs but
    # keeps their parameters: in a fused checkpoint they are already applied.
    implicit_folded = bool(report.expanded_fused) and report.has_implicit
    if implicit_folded:
        for key in [k for k in converted if k.endswith('.implicit')]:
            del converted[key]
    anchor_keys = []  # the head's anchor buffer: filled below
    for key, tensor in ours.items():
        if key in converted:
            continue
        if key.endswith('.anchor_sizes'):
            anchor_keys.append(key)
        elif key.endswith('.implicit') and (implicit_folded
                                          or not report.has_implicit):
            fill = 0. if '.implicit_a.' in key else 1.
            converted[key] = torch.full(
                tensor.shape, fill, dtype=tensor.dtype, device='cpu')
            report.filled_identity.append(key)
        elif '.aux_convs.' in key and not report.has_aux:
            report.missing_aux.append(key)
        else:
            raise ValueError(f'the model key {key} got no official tensor')

    if source_anchors is not None and not source_anchors.is_meta:
        strides = _model_strides(model)
        anchors = _model_anchors_px(model)
        if strides is not None and len(strides) == len(source_anchors):
            source_px = source_anchors * strides.view(-1, 1, 1)
            report.anchors_px = source_px.tolist()
            if anchors is not None:
                report.anchors_match = bool(
                    anchors.shape == source_px.shape
                    and torch.allclose(anchors, source_px, atol=1e-3))
    for key in anchor_keys:
        # the checkpoint's anchors when they fit the head, else the config's
        fits = (report.anchors_px is not None
                and tuple(ours[key].shape) == tuple(
                    torch.tensor(report.anchors_px).shape))
        converted[key] = (
            torch.tensor(report.anchors_px, dtype=torch.float32) if fits else
            _model_anchors_px(model).reshape(ours[key].shape))
    return converted, report
