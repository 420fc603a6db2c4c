"""Where each image of the official mosaics (``load_mosaic``,
``load_mosaic9``) and of the letterbox lands: the canvas the official
``random_perspective`` receives, written as one placement per image so the
images can be warped straight to the output without building the canvas."""
import random
from typing import List, NamedTuple, Sequence, Tuple

import numpy as np


class Tile(NamedTuple):
    """One image's place on the canvas (the official code's resized image:
    ``load_image``, long side = the input size).

    Attributes:
        box_scale: (sx, sy): normalized label coordinates times these...
        box_offset: ...plus these are canvas pixels (the official
            ``xywhn2xyxy(labels, sx, sy, padw, padh)``).
        pixel_matrix: 3x3, the resized image's pixel coordinates to the
            canvas's (pixel centres, as cv2.resize / cv2.warpAffine).
        visible: (x1, y1, x2, y2), the canvas pixels this image fills.
    """
    box_scale: Tuple[float, float]
    box_offset: Tuple[float, float]
    pixel_matrix: np.ndarray
    visible: Tuple[int, int, int, int]


def _shift(dx: float, dy: float) -> np.ndarray:
    m = np.eye(3)
    m[0, 2], m[1, 2] = dx, dy
    return m


def mosaic4_center(s: int) -> Tuple[int, int]:
    """(xc, yc) of the official 4-mosaic: each int(U(s/2, 1.5 s)), y drawn
    first."""
    yc, xc = (int(random.uniform(s // 2, 2 * s - s // 2)) for _ in range(2))
    return xc, yc


def mosaic4_tiles(sizes: Sequence[Tuple[int, int]], s: int,
                  center: Tuple[int, int]) -> List[Tile]:
    """The four tiles of ``load_mosaic`` (top left, top right, bottom left,
    bottom right around ``center``) on its ``2s x 2s`` canvas; ``sizes``
    are the resized images' (w, h)."""
    xc, yc = center
    tiles = []
    for i, (w, h) in enumerate(sizes):
        if i == 0:
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
        elif i == 1:
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, s * 2), yc
            x1b, y1b = 0, h - (y2a - y1a)
        elif i == 2:
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(s * 2, yc + h)
            x1b, y1b = w - (x2a - x1a), 0
        else:
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, s * 2), min(
                s * 2, yc + h)
            x1b, y1b = 0, 0
        padw, padh = x1a - x1b, y1a - y1b
        tiles.append(
            Tile((w, h), (padw, padh), _shift(padw, padh),
                 (x1a, y1a, x2a, y2a)))
    return tiles


def mosaic9_tiles(sizes: Sequence[Tuple[int, int]], s: int,
                  offset: Tuple[int, int]) -> List[Tile]:
    """The nine tiles of ``load_mosaic9`` (centre, then clockwise from the
    top) on its ``3s x 3s`` canvas, seen through the ``2s x 2s`` window at
    ``offset`` = (xc, yc) that the official code cuts out."""
    xc, yc = offset
    tiles = []
    for i, (w, h) in enumerate(sizes):
        if i == 0:
            h0, w0 = h, w
            c = s, s, s + w, s + h
        elif i == 1:
            c = s, s - h, s + w, s
        elif i == 2:
            c = s + wp, s - h, s + wp + w, s
        elif i == 3:
            c = s + w0, s, s + w0 + w, s + h
        elif i == 4:
            c = s + w0, s + hp, s + w0 + w, s + hp + h
        elif i == 5:
            c = s + w0 - w, s + h0, s + w0, s + h0 + h
        elif i == 6:
            c = s + w0 - wp - w, s + h0, s + w0 - wp, s + h0 + h
        elif i == 7:
            c = s - w, s + h0 - h, s, s + h0
        else:
            c = s - w, s + h0 - hp - h, s, s + h0 - hp
        hp, wp = h, w
        padx, pady = c[0] - xc, c[1] - yc
        # the placement (clipped at the 3s canvas) within the window
        x1, y1, x2, y2 = (max(v, 0) for v in c)
        visible = (max(x1 - xc, 0), max(y1 - yc, 0), min(x2 - xc, 2 * s),
                   min(y2 - yc, 2 * s))
        tiles.append(
            Tile((w, h), (padx, pady), _shift(padx, pady), visible))
    return tiles


def mosaic9_offset(s: int) -> Tuple[int, int]:
    """(xc, yc) of the official 9-mosaic window: each int(U(0, s)), y
    first."""
    yc, xc = (int(random.uniform(0, s)) for _ in range(2))
    return xc, yc


def letterbox_tile(size: Tuple[int, int], s: int) -> Tile:
    """The official ``letterbox(img, s, auto=False, scaleup=True)`` of a
    resized image of ``size`` (w, h) onto an ``s x s`` canvas."""
    w, h = size
    r = min(s / h, s / w)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    dw, dh = (s - new_w) / 2, (s - new_h) / 2
    left, top = int(round(dw - 0.1)), int(round(dh - 0.1))
    # cv2.resize to (new_w, new_h): pixel centres scale about -0.5
    gx, gy = new_w / w, new_h / h
    m = np.array([[gx, 0, 0.5 * gx - 0.5 + left],
                  [0, gy, 0.5 * gy - 0.5 + top], [0, 0, 1.]])
    # the labels use the unrounded padding and r (official xywhn2xyxy)
    return Tile((r * w, r * h), (dw, dh), m,
                (left, top, left + new_w, top + new_h))
