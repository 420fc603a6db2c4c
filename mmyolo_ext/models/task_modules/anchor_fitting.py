"""Anchor fitting of the official autoanchor (YOLOv7 ``check_anchors``).

The measure is the anchor-ratio rule of the assigners: a label of size
``(w, h)`` can be matched by an anchor ``(aw, ah)`` when ``min(r, 1 / r) >
1 / anchor_t`` for both ``r = w / aw`` and ``r = h / ah``. The best possible
recall (BPR) is the fraction of labels that some anchor can match.

Label sizes are those the model sees in training: each image scaled so that
its long side is the training size (the official ``imgsz * shape /
max(shape)``). :func:`fit_anchors` is the official recipe: k-means on the
whitened sizes of the labels of at least 2 px, then a genetic refinement
(each generation multiplies the anchors by a random factor; kept when the
fitness, the mean best ratio metric over the labels past the threshold,
improves). The result is sorted by area, so reshaped to ``(levels, anchors,
2)`` it assigns the small anchors to the fine (small-stride) levels.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

# Labels smaller than this on both sides are left out of the fitting (the
# official filter); they still count in the BPR.
MIN_FIT_SIZE = 2.0


def ratio_metric(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """``(n, k)`` worst side ratio ``min(r, 1 / r)`` of each label and
    anchor; 1 is a perfect fit, 0 a degenerate label.

    Args:
        wh (np.ndarray): ``(n, 2)`` label widths and heights in pixels.
        anchors (np.ndarray): ``(k, 2)`` anchor widths and heights.
    """
    ratio = wh[:, None, :] / anchors[None, :, :]
    with np.errstate(divide='ignore', invalid='ignore'):
        metric = np.minimum(ratio, 1.0 / ratio).min(axis=2)
    return np.nan_to_num(metric, nan=0.0)


def best_possible_recall(wh: np.ndarray, anchors: np.ndarray,
                         anchor_t: float) -> Tuple[float, float]:
    """Best possible recall and mean number of anchors per label that pass
    the ratio rule.

    Args:
        wh (np.ndarray): ``(n, 2)`` label sizes in pixels (n > 0).
        anchors (np.ndarray): ``(k, 2)`` anchors in pixels.
        anchor_t (float): Largest allowed box/anchor side ratio.

    Returns:
        tuple[float, float]: ``(bpr, anchors_above_threshold)``.
    """
    metric = ratio_metric(wh, anchors)
    passes = metric > 1.0 / anchor_t
    return float(passes.any(axis=1).mean()), float(passes.sum(axis=1).mean())


def _fitness(wh: np.ndarray, anchors: np.ndarray, threshold: float) -> float:
    best = ratio_metric(wh, anchors).max(axis=1)
    return float((best * (best > threshold)).mean())


def kmeans_codebook(points: np.ndarray, k: int, rng: np.random.Generator,
                    restarts: int = 30,
                    tolerance: float = 1e-5) -> np.ndarray:
    """k-means centroids of ``points`` (``scipy.cluster.vq.kmeans`` when
    scipy is installed, else the same algorithm here).

    Both run ``restarts`` Lloyd iterations from ``k`` distinct random
    points and keep the codebook with the lowest mean distance. Here an
    emptied cluster is re-seeded at the point farthest from its centroid,
    so exactly ``k`` centroids come back (scipy drops emptied clusters;
    this function then raises).
    """
    if len(points) < k:
        raise ValueError(f'k-means needs at least {k} label sizes, got '
                         f'{len(points)}')
    try:
        from scipy.cluster.vq import kmeans
    except ImportError:
        kmeans = None
    if kmeans is not None:
        seed = int(rng.integers(2**31 - 1))
        try:  # scipy >= 1.15 names the random source rng, before: seed
            codebook, _ = kmeans(points, k, iter=restarts, thresh=tolerance,
                                 rng=np.random.default_rng(seed))
        except TypeError:
            codebook, _ = kmeans(points, k, iter=restarts, thresh=tolerance,
                                 seed=np.random.default_rng(seed))
        if len(codebook) != k:
            raise RuntimeError(f'scipy k-means returned {len(codebook)} of '
                               f'{k} anchors (clusters emptied)')
        return codebook

    best, best_distortion = None, np.inf
    for _ in range(restarts):
        codes = points[rng.choice(len(points), k, replace=False)].copy()
        previous = np.inf
        while True:
            dist = np.linalg.norm(points[:, None] - codes[None], axis=2)
            nearest = dist.argmin(1)
            distortion = dist[np.arange(len(points)), nearest].mean()
            for j in range(k):
                members = nearest == nearest.dtype.type(j)
                if members.any():
                    codes[j] = points[members].mean(0)
                else:  # re-seed at the worst-served point
                    codes[j] = points[dist.min(1).argmax()]
            if previous - distortion <= tolerance:
                break
            previous = distortion
        if distortion < best_distortion:
            best, best_distortion = codes.copy(), distortion
    return best


def fit_anchors(wh: np.ndarray,
                num_anchors: int,
                anchor_t: float = 4.0,
                generations: int = 1000,
                mutation_prob: float = 0.9,
                sigma: float = 0.1,
                rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Anchors for the label sizes ``wh``: k-means + genetic refinement.

    Args:
        wh (np.ndarray): ``(n, 2)`` label sizes in training pixels.
        num_anchors (int): Number of anchors (all levels).
        anchor_t (float): Largest allowed box/anchor side ratio.
        generations (int): Generations of the refinement.
        mutation_prob (float): Probability that an anchor side mutates.
        sigma (float): Scale of a mutation.
        rng (np.random.Generator, optional): Random source.

    Returns:
        np.ndarray: ``(num_anchors, 2)`` anchors sorted by area.

    Raises:
        ValueError: When fewer than ``num_anchors`` labels are at least
            ``MIN_FIT_SIZE`` pixels wide or high.
    """
    rng = np.random.default_rng() if rng is None else rng
    threshold = 1.0 / anchor_t
    fit_wh = wh[(wh >= MIN_FIT_SIZE).any(axis=1)].astype(np.float64)
    scale = fit_wh.std(axis=0) if len(fit_wh) else np.ones(2)
    scale[scale == 0] = 1.0  # all labels the same size on a side
    anchors = kmeans_codebook(fit_wh / scale, num_anchors, rng) * scale

    fitness = _fitness(fit_wh, anchors, threshold)
    for _ in range(generations):
        factor = np.ones_like(anchors)
        while (factor == 1).all():  # mutate until something changes
            factor = ((rng.random(anchors.shape) < mutation_prob) *
                      rng.random() * rng.standard_normal(anchors.shape) *
                      sigma + 1).clip(0.3, 3.0)
        candidate = (anchors * factor).clip(min=MIN_FIT_SIZE)
        candidate_fitness = _fitness(fit_wh, candidate, threshold)
        if candidate_fitness > fitness:
            anchors, fitness = candidate, candidate_fitness
    return anchors[np.argsort(anchors.prod(axis=1), kind='stable')]


def anchors_by_level(anchors: np.ndarray, strides, num_levels: int
                     ) -> np.ndarray:
    """``(k, 2)`` anchors -> ``(levels, k / levels, 2)``, the small ones on
    the small-stride levels (the official ``check_anchor_order``: levels
    reversed when the area order disagrees with the stride order)."""
    anchors = np.asarray(anchors, dtype=np.float64)
    anchors = anchors[np.argsort(anchors.prod(axis=1), kind='stable')]
    per_level = anchors.reshape(num_levels, -1, 2)
    if strides[-1] < strides[0]:
        per_level = per_level[::-1]
    return per_level


@dataclass
class AnchorCheck:
    """Outcome of :func:`check_anchors` (anchors in pixels, per level).

    Attributes:
        num_labels (int): Labels measured.
        bpr_before (float): BPR of the given anchors.
        above_before (float): Anchors per label past the ratio rule.
        anchors_before (list): The given anchors.
        bpr_after (float, optional): BPR of the fitted anchors (None when no
            fit was tried).
        anchors_after (list): The anchors to use (the given ones unless
            replaced).
        replaced (bool): Whether the fitted anchors replace the given ones.
        note (str): Why nothing was fitted or replaced, or ''.
    """
    num_labels: int
    bpr_before: float
    above_before: float
    anchors_before: list
    bpr_after: Optional[float] = None
    anchors_after: list = field(default_factory=list)
    replaced: bool = False
    note: str = ''


def check_anchors(image_label_sizes: Sequence[np.ndarray],
                  anchors: np.ndarray,
                  strides: Sequence[int],
                  anchor_t: float = 4.0,
                  bpr_threshold: float = 0.98,
                  scale_jitter: Tuple[float, float] = (0.9, 1.1),
                  generations: int = 1000,
                  mutation_prob: float = 0.9,
                  sigma: float = 0.1,
                  rng: Optional[np.random.Generator] = None) -> AnchorCheck:
    """The official ``check_anchors``: measure, and refit when the BPR is
    below ``bpr_threshold``.

    The BPR is measured on the label sizes with one random scale per image
    from ``scale_jitter`` (the official augment scale, 0.9-1.1); the fit
    uses the unjittered sizes; the fitted anchors are kept only when their
    BPR (on the same jittered sizes) is higher.

    Args:
        image_label_sizes (Sequence[np.ndarray]): Per image ``(n_i, 2)``
            label sizes in training pixels (long image side = training
            size).
        anchors (np.ndarray): ``(levels, na, 2)`` current anchors, pixels.
        strides (Sequence[int]): Stride of each level.
        anchor_t, bpr_threshold, scale_jitter, generations, mutation_prob,
            sigma: See :func:`fit_anchors` and above.
        rng (np.random.Generator, optional): Random source.
    """
    rng = np.random.default_rng() if rng is None else rng
    anchors = np.asarray(anchors, dtype=np.float64)
    num_levels = anchors.shape[0]
    flat = anchors.reshape(-1, 2)
    scales = rng.uniform(*scale_jitter, size=len(image_label_sizes))
    sizes: List[np.ndarray] = [
        np.asarray(s, dtype=np.float64).reshape(-1, 2)
        for s in image_label_sizes
    ]
    wh = np.concatenate(sizes) if sizes else np.zeros((0, 2))
    if len(wh) == 0:
        return AnchorCheck(0, float('nan'), float('nan'), anchors.tolist(),
                           anchors_after=anchors.tolist(),
                           note='no labels: anchors kept')
    jittered = np.concatenate([s * f for s, f in zip(sizes, scales)])
    bpr, above = best_possible_recall(jittered, flat, anchor_t)
    result = AnchorCheck(len(wh), bpr, above, anchors.tolist(),
                         anchors_after=anchors.tolist())
    if bpr >= bpr_threshold:
        return result
    try:
        fitted = fit_anchors(wh, len(flat), anchor_t, generations,
                             mutation_prob, sigma, rng)
    except (ValueError, RuntimeError) as error:
        result.note = f'fit failed ({error}): anchors kept'
        return result
    result.bpr_after, _ = best_possible_recall(jittered, fitted, anchor_t)
    if result.bpr_after > bpr:
        result.anchors_after = anchors_by_level(fitted, strides,
                                                num_levels).tolist()
        result.replaced = True
    else:
        result.note = 'the given anchors are at least as good: kept'
    return result
