"""Narrow fixes for mmengine 0.10.7 on torch>=2.6, applied on import.

1. Resume. torch>=2.6 loads with ``weights_only=True`` by default, and an
   mmengine checkpoint holds the message hub's ``HistoryBuffer`` objects (with
   numpy arrays inside), so ``--resume`` fails with ``Unsupported global:
   mmengine.logging.history_buffer.HistoryBuffer`` (mmengine #1655). We add
   exactly what an mmengine checkpoint pickles to torch's allow-list of safe
   globals: ``HistoryBuffer``, the numpy array/scalar reconstructors inside
   it, ``collections.Counter`` (MultiStepLR milestones) and, for the
   statistics methods HistoryBuffer pickles by reference
   (``getattr(HistoryBuffer, 'mean')``), a ``getattr`` that resolves only
   public methods of HistoryBuffer. The loader stays ``weights_only``; any
   other global, or any other ``getattr``, is still refused.
2. The ``pytorch`` launcher on a machine without CUDA. mmengine calls
   ``torch.cuda.set_device`` and hands ``device_ids=[LOCAL_RANK]`` to DDP; both
   fail without CUDA. Where CUDA is absent we skip ``set_device``, use gloo
   instead of a CUDA-only backend (nccl), and build DDP without
   ``device_ids``, as PyTorch requires for CPU modules. With CUDA present
   nothing changes.
3. Checkpoints. mmengine's ``CheckpointHook`` deletes the oldest kept
   checkpoint (and the previous best) before it writes the new one, writes
   in place, and names the new file in ``last_checkpoint`` whatever became
   of it: a kill during a save can leave nothing to resume from. Our
   :class:`~mmyolo_ext.engine.hooks.AtomicCheckpointHook` (a subclass, same
   arguments) replaces it in mmengine's root HOOKS registry under the name
   ``CheckpointHook``. Every scope (mmengine, mmdet, mmyolo, ours) looks
   that name up there, so any config run with mmyolo_ext imported gets it
   with ``type='CheckpointHook'`` unchanged; a registration in our scope
   alone would miss configs whose ``default_scope`` is ``mmengine``.
"""
import collections
import functools
import inspect
import pickle
from typing import Callable

import numpy as np
import torch
import torch.distributed as torch_dist
from mmengine.dist import utils as dist_utils
from mmengine.logging import HistoryBuffer, print_log
from mmengine.model.wrappers import MMDistributedDataParallel


def _numpy_safe_globals() -> list:
    """The numpy globals pickled inside HistoryBuffer's arrays and scalars."""
    from numpy._core import multiarray
    dtype_classes = [type(np.dtype(t)) for t in np.typecodes['All'] if t]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype,
            *dtype_classes]


def _history_buffer_getattr(owner: object, name: str) -> Callable:
    """``getattr`` as a weights-only checkpoint may use it: only to fetch a
    public method of HistoryBuffer (its pickled statistics methods)."""
    method = getattr(HistoryBuffer, name, None) \
        if owner is HistoryBuffer and not name.startswith('_') else None
    if not inspect.isfunction(method):
        raise pickle.UnpicklingError(
            f'weights-only load refused getattr({owner!r}, {name!r}): only '
            'the statistics methods of mmengine HistoryBuffer are allowed')
    return method


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read mmengine checkpoints."""
    if not hasattr(torch.serialization, 'add_safe_globals'):  # torch<2.4
        return
    torch.serialization.add_safe_globals([
        HistoryBuffer, collections.Counter, *_numpy_safe_globals(),
        # protocol-2 pickles name builtins '__builtin__'
        (_history_buffer_getattr, '__builtin__.getattr'),
        (_history_buffer_getattr, 'builtins.getattr')
    ])


def _cuda_usable() -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


_original_init_dist_pytorch = dist_utils._init_dist_pytorch


@functools.wraps(_original_init_dist_pytorch)
def _init_dist_pytorch(backend, init_backend='torch', **kwargs) -> None:
    accelerator = (dist_utils.is_mlu_available()
                   or dist_utils.is_npu_available()
                   or dist_utils.is_musa_available() or _cuda_usable())
    if accelerator or init_backend != 'torch':
        return _original_init_dist_pytorch(backend, init_backend, **kwargs)
    if backend != 'gloo':
        print_log(f'No CUDA device: using the gloo backend instead of '
                  f'{backend!r}', 'current')
    torch_dist.init_process_group(backend='gloo', **kwargs)


_original_ddp_init = MMDistributedDataParallel.__init__


@functools.wraps(_original_ddp_init)
def _ddp_init(self, module, detect_anomalous_params=False, **kwargs):
    first_param = next(module.parameters(), None)
    if first_param is not None and first_param.device.type == 'cpu':
        kwargs.pop('device_ids', None)  # DDP refuses device_ids for CPU
        kwargs.pop('output_device', None)
    _original_ddp_init(
        self,
        module=module,
        detect_anomalous_params=detect_anomalous_params,
        **kwargs)


def use_atomic_checkpoint_hook() -> None:
    from mmengine.registry import HOOKS
    from .hooks.atomic_checkpoint_hook import AtomicCheckpointHook
    HOOKS.import_from_location()  # mmengine's own hooks first, then ours
    HOOKS.register_module(
        name='CheckpointHook', module=AtomicCheckpointHook, force=True)


def apply() -> None:
    allow_mmengine_checkpoints()
    use_atomic_checkpoint_hook()
    dist_utils._init_dist_pytorch = _init_dist_pytorch
    MMDistributedDataParallel.__init__ = _ddp_init


apply()
