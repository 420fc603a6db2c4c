"""Optimizer steps skipped, not applied, when the loss or the gradients are
not finite."""
import logging
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as torch_dist
import torch.nn as nn
from mmengine.dist import get_world_size
from mmengine.logging import MessageHub, MMLogger, print_log

# Runtime-info key of the message hub (never saved in checkpoints).
BATCH_FILES_KEY = 'train_batch_files'  # posted by BatchFilesHook

_SKIP_COUNTS_KEY = 'nonfinite_skips'  # in the wrapper's state dict

# A loss dict's log variable ``nonfinite_<term>`` (e.g. ``ComputeLossOTA``'s
# ``nonfinite_obj``) is a ``(heads, levels)`` or ``(levels,)`` tensor: the
# value of term ``loss_<term>`` per head (0 the lead, 1 the auxiliary) and
# level where it is not finite, 0 where it is.
NONFINITE_PREFIX = 'nonfinite_'


def nonfinite_terms(name: str, report: torch.Tensor) -> List[str]:
    """The non-finite entries of a loss dict's ``nonfinite_<term>`` log
    variable, e.g. ``['loss_obj (level 1) = nan']`` (one host
    synchronisation)."""
    term = 'loss_' + name[len(NONFINITE_PREFIX):]
    report = report.detach().float().cpu()
    if report.dim() < 2:
        report = report.reshape(1, -1)  # one head
    return [
        f'{term} ({"auxiliary head, " if head else ""}level {level}) = '
        f'{report[head, level].item()}'
        for head, level in torch.nonzero(~torch.isfinite(report)).tolist()
    ]


def note_batch_files(files: Sequence[str]) -> None:
    """Record the image files of the training batch about to be run."""
    MessageHub.get_current_instance().update_info(
        BATCH_FILES_KEY, list(files), resumed=False)


def _take_info(key: str) -> list:
    hub = MessageHub.get_current_instance()
    value = list(hub.get_info(key, []))
    if value:
        hub.update_info(key, [], resumed=False)
    return value


class NonFiniteStepGuard:
    """Mixin for an :class:`OptimWrapper` (before it in the bases): an
    optimizer step whose loss or gradients are not finite is skipped.

    Each backward pass notes (without a host synchronisation) whether its
    loss was finite, the ``nonfinite_<term>`` log variables of the loss
    dict of the forward pass run in :meth:`optim_context` (see
    :data:`NONFINITE_PREFIX`; read only when a step is skipped) and the
    image files of the batch (:func:`note_batch_files`, posted by
    :class:`BatchFilesHook`). At the
    step, one flag (non-finite loss in any backward pass since the last
    step, or, without a loss scaler, a non-finite gradient) is reduced over
    the processes, so that every process skips the same steps. A skipped
    step applies nothing: the optimizer is not called (so the EMA, updated
    per optimizer step, is not updated either) and the accumulated
    gradients are dropped by the ``zero_grad`` that follows. It is logged
    with the iteration, the terms and levels, and the files, and counted;
    ``max_consecutive_skips`` skipped steps in a row stop the run with an
    error.

    With a loss scaler (AMP), non-finite gradients are the scaler's to
    handle: it skips the step and lowers its scale, as in the official
    train.py. That skip is logged and counted here once, as any other; a
    non-finite loss is skipped here without calling the scaler (a forward
    overflow is not a loss-scale problem, so the scale is left as it is).

    Args:
        max_consecutive_skips (int): Skipped steps in a row that stop the
            run; 0 never stops. Defaults to 10.
        **kwargs: The arguments of the wrapper.
    """

    def __init__(self, *, max_consecutive_skips: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        if max_consecutive_skips < 0:
            raise ValueError('max_consecutive_skips must be >= 0, got '
                             f'{max_consecutive_skips}')
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self._window_bad: Optional[torch.Tensor] = None
        # (iteration, log variable name, its tensor)
        self._window_terms: List[Tuple[int, str, torch.Tensor]] = []
        self._forward_terms: Dict[str, torch.Tensor] = {}
        self._window_files: List[Tuple[int, List[str]]] = []
        self._optimizer_stepped = False
        self.optimizer.register_step_post_hook(self._note_optimizer_step)

    def _note_optimizer_step(self, optimizer, args, kwargs) -> None:
        self._optimizer_stepped = True

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """The wrapper's context, in which the training step's forward pass
        runs; the model's loss dict is read for its ``nonfinite_<term>``
        log variables."""
        handle = model.register_forward_hook(self._read_loss_dict)
        try:
            with super().optim_context(model):
                yield
        finally:
            handle.remove()

    def _read_loss_dict(self, module, args, outputs) -> None:
        if isinstance(outputs, dict):
            self._forward_terms.update(
                (key, value.detach()) for key, value in outputs.items()
                if key.startswith(NONFINITE_PREFIX)
                and isinstance(value, torch.Tensor))

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        bad = ~torch.isfinite(loss.detach())
        self._window_bad = bad if self._window_bad is None else (
            self._window_bad | bad)
        super().backward(loss, **kwargs)
        iteration = self._inner_count  # 1-based, as the log lines count
        self._window_terms += [(iteration, name, report)
                               for name, report in self._forward_terms.items()]
        self._forward_terms = {}
        self._window_files.append((iteration, _take_info(BATCH_FILES_KEY)))

    def step(self, **kwargs) -> None:
        scaler = getattr(self, 'loss_scaler', None)
        scaled = scaler is not None and scaler.is_enabled()
        no = torch.zeros((), dtype=torch.bool, device=self._device())
        loss_bad = no if self._window_bad is None else self._window_bad
        # with a loss scaler the gradients are scaled: the scaler checks them
        grad_bad = no if scaled else ~self._gradients_finite()
        loss_bad, grad_bad = self._any_process(loss_bad, grad_bad)
        if loss_bad or grad_bad:
            reason = 'a non-finite ' + ' and '.join(
                name for name, bad in (('loss', loss_bad),
                                       ('gradient', grad_bad)) if bad)
        else:
            self._optimizer_stepped = False
            scale = scaler.get_scale() if scaled else None
            super().step(**kwargs)
            if self._optimizer_stepped or not scaled:
                self.consecutive_skips = 0
                self._reset_window()
                return
            reason = ('non-finite gradients: the GradScaler skipped it (loss '
                      f'scale {scale:g} -> {scaler.get_scale():g})')
        self._skip(reason)

    def state_dict(self) -> dict:
        state = super().state_dict()
        # a resumed run goes on counting (and stopping) as before
        state[_SKIP_COUNTS_KEY] = dict(
            skipped_steps=self.skipped_steps,
            consecutive_skips=self.consecutive_skips)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        counts = state_dict.pop(_SKIP_COUNTS_KEY, {})
        self.skipped_steps = int(counts.get('skipped_steps', 0))
        self.consecutive_skips = int(counts.get('consecutive_skips', 0))
        super().load_state_dict(state_dict)

    def _device(self) -> torch.device:
        for group in self.optimizer.param_groups:
            for param in group['params']:
                return param.device
        return torch.device('cpu')

    def _gradients_finite(self) -> torch.Tensor:
        grads = [
            p.grad for group in self.optimizer.param_groups
            for p in group['params'] if p.grad is not None
        ]
        if not grads:
            return torch.ones((), dtype=torch.bool, device=self._device())
        # the largest |gradient| of each tensor is finite iff all its
        # elements are (NaN propagates through the maximum)
        peaks = torch._foreach_norm(grads, float('inf'))
        return torch.isfinite(torch.stack(peaks)).all()

    @staticmethod
    def _any_process(*flags: torch.Tensor) -> List[bool]:
        """Each flag, true where it is true in any process (one host
        synchronisation)."""
        flags = torch.stack([f.to(flags[0].device) for f in flags]).int()
        if get_world_size() > 1:
            if torch_dist.get_backend() != 'nccl':  # gloo: CPU tensors
                flags = flags.cpu()
            torch_dist.all_reduce(flags, op=torch_dist.ReduceOp.MAX)
        return [bool(f) for f in flags.tolist()]

    def _skip(self, reason: str) -> None:
        self.skipped_steps += 1
        self.consecutive_skips += 1
        iterations = [it for it, _ in self._window_files] or [
            self._inner_count
        ]
        span = (f'iteration {iterations[-1]}' if len(iterations) == 1 else
                f'iterations {iterations[0]}-{iterations[-1]}')
        terms = '; '.join(f'iteration {it}: {term}'
                          for it, name, report in self._window_terms
                          for term in nonfinite_terms(name, report)) or (
                              'none reported by the loss')
        files = '; '.join(
            f'iteration {it}: {", ".join(names)}'
            for it, names in self._window_files
            if names) or ('not recorded (add BatchFilesHook to '
                          'custom_hooks)')
        print_log(
            f'Skipped the optimizer step of {span} for {reason}: nothing '
            'applied, its accumulated gradients dropped, EMA not updated. '
            f'Non-finite loss terms: {terms}. Images: {files}. Skipped steps '
            f'so far: {self.skipped_steps} ({self.consecutive_skips} in a '
            'row).',
            logger='current',
            level=logging.WARNING)
        self._reset_window()
        if 0 < self.max_consecutive_skips <= self.consecutive_skips:
            log_file = getattr(MMLogger.get_current_instance(), 'log_file',
                               None)
            message = (
                f'{self.consecutive_skips} optimizer steps in a row were '
                f'skipped for non-finite losses or gradients (the last at '
                f'{span}). Look at the "Skipped the optimizer step" warnings '
                f'in {log_file or "the training log"}: each names the '
                'iteration, the loss term and level, and the images of the '
                'batch. Usual causes: too high a learning rate or loss gain, '
                'a wrong annotation in those images, fp16 overflow with '
                '--amp (try without it). optim_wrapper.'
                'max_consecutive_skips sets this limit (0: never stop).')
            print_log(message, logger='current', level=logging.ERROR)
            raise RuntimeError(message)

    def _reset_window(self) -> None:
        self._window_bad = None
        self._window_terms = []
        self._window_files = []
