"""The official ``random_perspective`` (utils/datasets.py) split into its
parts: the random draws, the 3x3 matrix, the boxes and the candidate rule,
so the fused mosaic can compose the matrix with each image's placement."""
import math
import random
from typing import List, NamedTuple, Sequence, Tuple

import cv2
import numpy as np


class PerspectiveParams(NamedTuple):
    """One draw of the official random_perspective, in its order."""
    perspective_x: float = 0.0  # P[2, 0]
    perspective_y: float = 0.0  # P[2, 1]
    angle: float = 0.0  # degrees
    scale: float = 1.0
    shear_x: float = 0.0  # degrees
    shear_y: float = 0.0  # degrees
    translate_x: float = 0.5  # fraction of the output width
    translate_y: float = 0.5  # fraction of the output height


def sample_perspective(degrees: float, translate: float, scale: float,
                       shear: float, perspective: float) -> PerspectiveParams:
    """The official draws (``random.uniform``, same order and ranges:
    scale ~ U(1 - scale, 1.1 + scale))."""
    uniform = random.uniform
    return PerspectiveParams(
        uniform(-perspective, perspective), uniform(-perspective,
                                                    perspective),
        uniform(-degrees, degrees), uniform(1 - scale, 1.1 + scale),
        uniform(-shear, shear), uniform(-shear, shear),
        uniform(0.5 - translate, 0.5 + translate),
        uniform(0.5 - translate, 0.5 + translate))


def perspective_matrix(p: PerspectiveParams, in_size: Tuple[int, int],
                       out_size: Tuple[int, int]) -> np.ndarray:
    """``M = T @ S @ R @ P @ C``: input pixels (``in_size`` = (w, h)) to
    output pixels (``out_size`` = (w, h))."""
    C = np.eye(3)
    C[0, 2], C[1, 2] = -in_size[0] / 2, -in_size[1] / 2
    P = np.eye(3)
    P[2, 0], P[2, 1] = p.perspective_x, p.perspective_y
    R = np.eye(3)
    R[:2] = cv2.getRotationMatrix2D(angle=p.angle, center=(0, 0),
                                    scale=p.scale)
    S = np.eye(3)
    S[0, 1] = math.tan(p.shear_x * math.pi / 180)
    S[1, 0] = math.tan(p.shear_y * math.pi / 180)
    T = np.eye(3)
    T[0, 2], T[1, 2] = p.translate_x * out_size[0], p.translate_y * out_size[1]
    return T @ S @ R @ P @ C


def transform_points(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``(n, 2)`` points through the 3x3 ``M`` (projective divide when the
    last row is not (0, 0, 1))."""
    xy = points @ M[:2, :2].T + M[:2, 2]
    if M[2, 0] or M[2, 1]:
        w = points @ M[2, :2] + M[2, 2]
        xy /= w[:, None]
    return xy


def transform_boxes(boxes: np.ndarray, M: np.ndarray,
                    out_size: Tuple[int, int]) -> np.ndarray:
    """The official box warp: the 4 corners of each ``(n, 4)`` xyxy box
    through ``M``, their bounding box clipped to the output."""
    n = len(boxes)
    corners = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)
    xy = transform_points(corners, M).reshape(n, 4, 2)
    new = np.concatenate([xy.min(1), xy.max(1)], 1)
    np.clip(new[:, 0::2], 0, out_size[0], out=new[:, 0::2])
    np.clip(new[:, 1::2], 0, out_size[1], out=new[:, 1::2])
    return new


def resample_polygon(polygon: np.ndarray, n: int = 1000) -> np.ndarray:
    """The official ``resample_segments``: the closed polygon as ``n``
    points evenly spaced in vertex index."""
    closed = np.concatenate([polygon, polygon[:1]], 0)
    x = np.linspace(0, len(closed) - 1, n)
    xp = np.arange(len(closed))
    return np.stack([np.interp(x, xp, closed[:, 0]),
                     np.interp(x, xp, closed[:, 1])], 1)


def transform_polygons(polygons: Sequence[np.ndarray], M: np.ndarray,
                       out_size: Tuple[int, int]) -> np.ndarray:
    """The official segment path: each polygon resampled to 1000 points,
    warped, and boxed by its points inside the output (``segment2box``;
    none inside: a zero box)."""
    w, h = out_size
    new = np.zeros((len(polygons), 4))
    if not len(polygons):
        return new
    xy = transform_points(
        np.concatenate([resample_polygon(p) for p in polygons]), M)
    xy = xy.reshape(len(polygons), 1000, 2)
    x, y = xy[..., 0], xy[..., 1]
    inside = (x >= 0) & (y >= 0) & (x <= w) & (y <= h)
    # segment2box keeps a box only when some inside x is non-zero
    valid = (inside & (x != 0)).any(1)
    big = np.where(inside, 0.0, np.inf)
    new[:, 0] = (x + big).min(1)
    new[:, 1] = (y + big).min(1)
    new[:, 2] = (x - big).max(1)
    new[:, 3] = (y - big).max(1)
    new[~valid] = 0
    return new


def box_candidates(box1: np.ndarray,
                   box2: np.ndarray,
                   wh_thr: float = 2,
                   ar_thr: float = 20,
                   area_thr: float = 0.1,
                   eps: float = 1e-16) -> np.ndarray:
    """The official rule, on ``(n, 4)`` xyxy boxes before (``box1``, scaled
    by the draw's scale) and after (``box2``) the warp: kept when wider and
    taller than ``wh_thr`` px, keeping over ``area_thr`` of the area and an
    aspect ratio under ``ar_thr``."""
    w1, h1 = box1[:, 2] - box1[:, 0], box1[:, 3] - box1[:, 1]
    w2, h2 = box2[:, 2] - box2[:, 0], box2[:, 3] - box2[:, 1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return ((w2 > wh_thr) & (h2 > wh_thr) &
            (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr))


def warp_labels(boxes: np.ndarray, polygons: List[np.ndarray],
                M: np.ndarray, scale: float,
                out_size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """The labels' part of random_perspective: the new boxes and the mask of
    those kept. With polygons (one per box) the boxes come from the warped
    polygons and the area threshold is 0.01, as the official code does."""
    if not len(boxes):
        return boxes.reshape(0, 4), np.zeros(0, bool)
    use_polygons = bool(polygons) and any(p.any() for p in polygons)
    if use_polygons:
        new = transform_polygons(polygons, M, out_size)
    else:
        new = transform_boxes(boxes, M, out_size)
    keep = box_candidates(boxes * scale, new,
                          area_thr=0.01 if use_polygons else 0.10)
    return new, keep
