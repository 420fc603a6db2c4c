"""YOLOv7MosaicPerspective (each image warped once, straight into the
output) against the official "mosaic, then random_perspective" written out
in tests/helpers/official_augment.py, with the same random draws: images
within interpolation error (PSNR on the area the images cover, 2 px from
the seams), the same boxes kept and dropped by box_candidates, boxes within
1 px."""
import math
import random

import numpy as np
import pytest

from helpers import official_augment as official
from helpers.pipeline_data import ListDataset, make_images
from mmyolo_ext.datasets.transforms import YOLOv7MosaicPerspective
from mmyolo_ext.datasets.transforms.perspective import (PerspectiveParams,
                                                        transform_polygons)

S = 256
SIZES = [(300, 225), (256, 192), (180, 240), (400, 300), (210, 256),
         (256, 256), (200, 150), (320, 137), (192, 256)]
# (perspective x, y, angle, scale, shear x, shear y, translate x, y)
DRAWS = {
    'scale_translate': (0, 0, 0, 0.75, 0, 0, 0.42, 0.57),
    'small_scale': (0, 0, 0, 0.35, 0, 0, 0.5, 0.5),
    'large_scale': (0, 0, 0, 1.6, 0, 0, 0.62, 0.4),
    'rotate_shear': (0, 0, 12.0, 0.9, 5.0, -4.0, 0.47, 0.52),
    'perspective': (0.0004, -0.0003, -7.0, 0.8, 2.0, 1.0, 0.5, 0.45),
}
CENTERS = {4: [(300, 200), (140, 370)], 9: [(60, 200), (250, 10)]}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp('imgs')
    infos, images, labels = make_images(str(folder), SIZES, seed=1)
    return infos, images, labels


def psnr(a, b, mask):
    d = a.astype(np.float64)[mask] - b.astype(np.float64)[mask]
    return 10 * math.log10(255**2 / max((d**2).mean(), 1e-12))


def covered(M, rects, window, out_size, margin=2):
    """Output pixels whose canvas point lies ``margin`` px inside one of
    the images' rectangles (and inside the canvas window)."""
    ys, xs = np.mgrid[0:out_size, 0:out_size]
    p = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    q = np.linalg.inv(M) @ p
    qx, qy = q[0] / q[2], q[1] / q[2]
    ok = np.zeros(xs.size, bool)
    for x1, y1, x2, y2 in rects:
        x1, y1 = max(x1, 0), max(y1, 0)
        x2, y2 = min(x2, window), min(y2, window)
        ok |= ((qx >= x1 + margin) & (qx <= x2 - 1 - margin) &
               (qy >= y1 + margin) & (qy <= y2 - 1 - margin))
    return ok.reshape(out_size, out_size)


def run_both(data, kind, draws, center):
    infos, images, labels = data
    ds = ListDataset(infos)
    t = YOLOv7MosaicPerspective(img_scale=(S, S), with_polygons=False)
    n = {4: 4, 9: 9, 1: 1}[kind]
    ours = t.sample(
        ds.get_data_info(0), ds, kind != 1, params=PerspectiveParams(*draws),
        partners=list(range(1, n)), nine=kind == 9, center=center)
    if kind == 4:
        canvas, lab, rects = official.mosaic4(images[:4], labels[:4], S,
                                              *center)
    elif kind == 9:
        canvas, lab, rects = official.mosaic9(images, labels, S, *center)
    else:
        canvas, lab, rects = official.letterbox(images[0], labels[0], S)
    border = (-S // 2, -S // 2) if kind != 1 else (0, 0)
    img, kept, keep, M = official.random_perspective(canvas, lab, draws,
                                                     border)
    return ours, img, kept, keep, M, rects, canvas.shape[0]


@pytest.mark.parametrize('name', sorted(DRAWS))
@pytest.mark.parametrize('kind, center', [(4, c) for c in CENTERS[4]] +
                         [(9, c) for c in CENTERS[9]] + [(1, None)])
def test_fused_equals_mosaic_then_warp(data, kind, center, name):
    ours, img, kept, keep, M, rects, window = run_both(
        data, kind, DRAWS[name], center)
    mask = covered(M, rects, window, S)
    assert mask.mean() > 0.05  # the comparison covers real content
    assert psnr(ours['img'], img, mask) > 35
    # the grey outside every image is exactly the official fill
    outside = ~covered(M, rects, window, S, margin=-2)
    assert (ours['img'][outside] == 114).all()
    # the same boxes kept, in the same order, within 1 px
    assert len(ours['gt_bboxes']) == keep.sum()
    np.testing.assert_allclose(ours['gt_bboxes'].numpy(), kept[:, 1:5],
                               atol=1.0)
    np.testing.assert_array_equal(ours['gt_bboxes_labels'], kept[:, 0])


def test_some_boxes_are_dropped_and_some_kept(data):
    """The cases above exercise box_candidates both ways."""
    kinds = [(4, CENTERS[4][0]), (9, CENTERS[9][0])]
    dropped = kept = 0
    for kind, center in kinds:
        for draws in DRAWS.values():
            *_, keep, _, _, _ = run_both(data, kind, draws, center)
            dropped += (~keep).sum()
            kept += keep.sum()
    assert dropped >= 10 and kept >= 10


def test_reduced_jpeg_decode_matches_full_decode(tmp_path):
    """Large JPEGs that shrink (DCT-scaled decode, then the warp) against
    the official full decode + resize + warp."""
    import cv2
    infos, _, labels = make_images(str(tmp_path), [(1600, 1200),
                                                   (1400, 1050),
                                                   (1200, 1600),
                                                   (2000, 1500)], seed=3,
                                   ext='.jpg')
    images = [cv2.imread(i['img_path']) for i in infos]
    ds = ListDataset(infos)
    t = YOLOv7MosaicPerspective(img_scale=(S, S), with_polygons=False)
    draws = DRAWS['small_scale']
    ours = t.sample(ds.get_data_info(0), ds, True,
                    params=PerspectiveParams(*draws), partners=[1, 2, 3],
                    nine=False, center=(250, 270))
    canvas, lab, rects = official.mosaic4(images, labels, S, 250, 270)
    img, kept, keep, M = official.random_perspective(canvas, lab, draws,
                                                     (-S // 2, -S // 2))
    assert psnr(ours['img'], img, covered(M, rects, 2 * S, S)) > 35
    np.testing.assert_allclose(ours['gt_bboxes'].numpy(), kept[:, 1:5],
                               atol=1.0)


def test_polygon_boxes_follow_the_official_segment2box():
    """With polygons, boxes come from the 1000-point resampled, warped
    polygons' points inside the output (official resample_segments +
    segment2box), written out here."""
    rng = np.random.default_rng(0)
    polygons = [rng.uniform(-20, 300, (k, 2)) for k in (3, 5, 8, 12)]
    M = np.array([[0.8, 0.1, 10], [-0.05, 0.9, -20], [0.0002, 0.0001, 1]])
    ours = transform_polygons(polygons, M, (S, S))
    for poly, box in zip(polygons, ours):
        closed = np.concatenate([poly, poly[:1]])
        x = np.linspace(0, len(closed) - 1, 1000)
        pts = np.stack([np.interp(x, np.arange(len(closed)), closed[:, i])
                        for i in range(2)], 1)
        xyw = np.concatenate([pts, np.ones((1000, 1))], 1) @ M.T
        xy = xyw[:, :2] / xyw[:, 2:]
        inside = ((xy[:, 0] >= 0) & (xy[:, 1] >= 0) & (xy[:, 0] <= S) &
                  (xy[:, 1] <= S))
        xs, ys = xy[inside, 0], xy[inside, 1]
        expected = [xs.min(), ys.min(), xs.max(), ys.max()] if any(xs) \
            else [0, 0, 0, 0]
        np.testing.assert_allclose(box, expected, atol=1e-6)


def test_random_draws_follow_the_official_ranges(data):
    """The mosaic centre and the scale draws stay in the official ranges
    (int(U(s/2, 1.5 s)); U(1 - scale, 1.1 + scale))."""
    from mmyolo_ext.datasets.transforms.mosaic_layout import mosaic4_center
    from mmyolo_ext.datasets.transforms.perspective import sample_perspective
    random.seed(0)
    centers = np.array([mosaic4_center(S) for _ in range(2000)])
    assert centers.min() >= S // 2 and centers.max() < 3 * S // 2
    scales = np.array([sample_perspective(0, 0.2, 0.5, 0, 0).scale
                       for _ in range(2000)])
    assert scales.min() >= 0.5 and scales.max() <= 1.6
    assert abs(scales.mean() - 1.05) < 0.03
