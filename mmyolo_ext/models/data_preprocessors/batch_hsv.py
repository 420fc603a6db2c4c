"""The official HSV augmentation on a batch of uint8 BGR tensors, in torch.

OpenCV's 8-bit conversions written out so that a GPU applies the gains
where the model runs: ``BGR2HSV`` in its fixed-point form (hue in [0, 180),
12-bit reciprocal tables, round half away from the shift), the official
tables, and ``HSV2BGR`` in float32 as OpenCV converts it back. The result
equals :func:`apply_hsv_gains` (OpenCV) up to one grey level where float
rounding differs (tested).
"""
import cv2
import numpy as np
import torch

from mmyolo_ext.datasets.transforms.hsv_aug import apply_hsv_gains, hsv_luts

_SHIFT = 12  # OpenCV's hsv_shift
# HSV2BGR's (b, g, r) picks among (v, p, q, t) per hue sector
_SECTORS = ((1, 3, 0), (1, 0, 2), (3, 0, 1), (0, 2, 1), (0, 1, 3), (2, 1, 0))


def _reciprocal_table(numerator: int, scale: float,
                      device: torch.device) -> torch.Tensor:
    """OpenCV's ``round((numerator << 12) / (scale * i))``, 0 at i = 0."""
    i = torch.arange(256, dtype=torch.float64, device=device)
    table = torch.round((numerator << _SHIFT) / (scale * i))
    table[0] = 0
    return table.to(torch.int32)


def bgr_to_hsv(bgr: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``COLOR_BGR2HSV`` of a uint8 ``(N, 3, H, W)`` batch, as
    int32 (hue in [0, 180))."""
    b, g, r = bgr.to(torch.int32).unbind(1)
    v = torch.maximum(torch.maximum(b, g), r)
    diff = v - torch.minimum(torch.minimum(b, g), r)
    sat_div = _reciprocal_table(255, 1.0, bgr.device)
    hue_div = _reciprocal_table(180, 6.0, bgr.device)
    half = 1 << (_SHIFT - 1)
    s = (diff * sat_div[v] + half) >> _SHIFT
    h = torch.where(v == r, g - b,
                    torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * hue_div[diff] + half) >> _SHIFT
    h = torch.where(h < 0, h + 180, h)
    return torch.stack((h, s, v), 1)


def _one_minus_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - a * b`` rounded once, as the fused multiply-add the compiler
    makes of OpenCV's vectorized HSV2BGR (the float32 product is exact in
    float64)."""
    return (1 - a.double() * b.double()).float()


def hsv_to_bgr(hsv: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``COLOR_HSV2BGR`` of an integer ``(N, 3, H, W)`` batch
    (hue in [0, 180)) as uint8, in float32 as its vectorized loop computes
    it: the sector from the truncated hue, each channel truncated."""
    h, s, v = hsv.to(torch.float32).unbind(1)
    s = s * (1.0 / 255.0)
    v = v * (1.0 / 255.0)
    h = h * (6.0 / 180.0)
    sector = torch.trunc(h)
    f = h - sector
    tab = torch.stack((v, v * (1 - s), v * _one_minus_product(s, f),
                       v * _one_minus_product(s, 1 - f)))
    picks = torch.tensor(_SECTORS, device=hsv.device)[sector.long() % 6]
    bgr = tab.gather(0, picks.permute(3, 0, 1, 2))  # (b, g, r), N, H, W
    return torch.trunc(bgr * 255.0).clamp_(0, 255).to(torch.uint8).permute(
        1, 0, 2, 3)


def hsv_augment_torch(bgr: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """The official HSV augmentation of a uint8 BGR ``(N, 3, H, W)`` batch
    with per-image ``gains`` ``(N, 3)``, in torch (any device)."""
    luts = torch.from_numpy(
        np.stack([np.stack(hsv_luts(g)) for g in gains.cpu().numpy()]))
    luts = luts.to(bgr.device, torch.int64)  # N, 3, 256
    hsv = bgr_to_hsv(bgr).to(torch.int64)
    n = hsv.shape[0]
    shifted = luts.gather(2, hsv.view(n, 3, -1)).view_as(hsv)
    return hsv_to_bgr(shifted)


def hsv_augment_batch(bgr: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """:func:`hsv_augment_torch` on an accelerator; on the CPU, OpenCV's
    conversions image by image (:func:`apply_hsv_gains`, ~40x faster there
    than the torch form), its planes interleaved and split back by OpenCV
    (2.3x faster than torch's permuted copies)."""
    if bgr.device.type != 'cpu':
        return hsv_augment_torch(bgr, gains)
    out = torch.empty_like(bgr)
    for image, result, g in zip(bgr, out, gains.cpu().numpy()):
        img = cv2.merge([plane.numpy() for plane in image])
        apply_hsv_gains(img, g)
        cv2.split(img, [plane.numpy() for plane in result])
    return out
