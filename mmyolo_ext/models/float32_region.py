"""A region of code that runs in float32 under mixed precision."""
from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch

# Device types whose autocast state a region turns off.
_AUTOCAST_DEVICES = ('cuda', 'cpu', 'xpu', 'mps')


@contextmanager
def float32_region() -> Iterator[None]:
    """Turn autocast off, on every device type where it is on, for the
    duration of the block (also usable as a function decorator).

    Under ``torch.autocast`` some ops of a float32 computation would run in
    half precision (on CUDA fp16 ``mm``/``conv``; on CPU bfloat16 the same
    ops), whatever their inputs' dtype. The YOLO loss and its assignment are
    written for float32 (their half-precision inputs are cast explicitly
    where they enter), so they run with autocast off, as PyTorch's rules for
    custom autograd functions ask of code that needs float32. Unlike
    ``torch.amp.custom_fwd(device_type=..., cast_inputs=torch.float32)`` this
    does not depend on a device type fixed when the code is written, and
    casts nothing by itself: the loss casts only the gathered rows and the
    objectness channel, not whole prediction maps.
    """
    with ExitStack() as stack:
        for device in _AUTOCAST_DEVICES:
            if torch.is_autocast_enabled(device):
                stack.enter_context(torch.autocast(device, enabled=False))
        yield
