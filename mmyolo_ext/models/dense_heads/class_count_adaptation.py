"""Loading prediction-layer tensors trained for another number of classes.

YOLOv7's prediction layers (the head's 1x1 convs and ImplicitM) hold, per
anchor, ``5 + num_classes`` channels: ``[tx, ty, tw, th, obj, cls...]``.
Fine-tuning an 80-class checkpoint on ``nc`` classes can keep the box and
objectness channels of every anchor, which do not depend on the classes,
and start only the class channels afresh. (The official ``intersect_dicts``
drops the whole detect layer instead; MMDetection / MMYOLO fail or skip
it.)
"""
from typing import Optional

from torch import Tensor

# box (4) and objectness (1) channels of each anchor: independent of classes
NUM_CLASS_FREE_CHANNELS = 5


def adapt_class_channels(source: Tensor, fresh: Tensor,
                         num_base_priors: int,
                         channel_dim: int = 0) -> Optional[Tensor]:
    """``fresh`` with the box and objectness channels of ``source``.

    Args:
        source (Tensor): The checkpoint's tensor: ``num_base_priors * (5 +
            nc_source)`` channels along ``channel_dim``.
        fresh (Tensor): The model's (freshly initialized) tensor: the same
            shape except ``num_base_priors * (5 + nc)`` channels.
        num_base_priors (int): Anchors per cell.
        channel_dim (int): The channel dimension (0 for conv weights and
            biases, 1 for ImplicitM's ``(1, C, 1, 1)``).

    Returns:
        Tensor | None: A new tensor shaped as ``fresh``: per anchor, the
        first 5 channels from ``source``, the class channels from
        ``fresh``; None when ``source`` is not such a tensor (other
        dimensions or anchor count differ, or no class channel).
    """
    src = source.movedim(channel_dim, 0)
    dst = fresh.detach().movedim(channel_dim, 0)
    if src.dim() != dst.dim() or src.shape[1:] != dst.shape[1:]:
        return None
    if src.shape[0] % num_base_priors or dst.shape[0] % num_base_priors:
        return None
    src_attribs = src.shape[0] // num_base_priors
    dst_attribs = dst.shape[0] // num_base_priors
    if min(src_attribs, dst_attribs) <= NUM_CLASS_FREE_CHANNELS:
        return None
    out = dst.clone().reshape(num_base_priors, dst_attribs, *dst.shape[1:])
    out[:, :NUM_CLASS_FREE_CHANNELS] = src.reshape(
        num_base_priors, src_attribs,
        *src.shape[1:])[:, :NUM_CLASS_FREE_CHANNELS].to(out)
    return out.reshape(dst.shape).movedim(0, channel_dim).contiguous()
