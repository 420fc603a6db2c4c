"""Over 500 samples of a fixed image set, the fused pipeline's geometry
(YOLOv7MosaicPerspective drawing its own random values) against the
official one (tests/helpers/official_augment.py, with the official draws
written out here): boxes per sample and the box width / height
distributions agree within sampling noise."""
import random

import numpy as np
import pytest

from helpers import official_augment as official
from helpers.pipeline_data import ListDataset, make_images
from mmyolo_ext.datasets.transforms import YOLOv7MosaicPerspective

S = 160
N = 500
SIZES = [(190, 140), (160, 120), (110, 150), (250, 190), (130, 160),
         (160, 160), (125, 94), (200, 86), (120, 160), (170, 128)]
HYP = dict(degrees=0.0, translate=0.2, scale=0.5, shear=0.0,
           perspective=0.0)  # hyp.scratch.custom


def official_draws(h):
    u = random.uniform
    return (u(-h['perspective'], h['perspective']),
            u(-h['perspective'], h['perspective']),
            u(-h['degrees'], h['degrees']),
            u(1 - h['scale'], 1.1 + h['scale']),
            u(-h['shear'], h['shear']), u(-h['shear'], h['shear']),
            u(0.5 - h['translate'], 0.5 + h['translate']),
            u(0.5 - h['translate'], 0.5 + h['translate']))


def official_sample(index, images, labels):
    """__getitem__ with mosaic 1.0: load_mosaic (0.8) or load_mosaic9."""
    n = len(images)
    if random.random() < 0.8:
        yc, xc = (int(random.uniform(S // 2, 2 * S - S // 2))
                  for _ in range(2))
        idx = [index] + random.choices(range(n), k=3)
        canvas, lab, _ = official.mosaic4([images[i] for i in idx],
                                          [labels[i] for i in idx], S, xc, yc)
    else:
        idx = [index] + random.choices(range(n), k=8)
        yc, xc = (int(random.uniform(0, S)) for _ in range(2))
        canvas, lab, _ = official.mosaic9([images[i] for i in idx],
                                          [labels[i] for i in idx], S, xc, yc)
    _, kept, _, _ = official.random_perspective(canvas, lab,
                                                official_draws(HYP),
                                                (-S // 2, -S // 2))
    return kept[:, 1:5]


def ks_statistic(a, b):
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side='right') / len(a)
    fb = np.searchsorted(np.sort(b), grid, side='right') / len(b)
    return np.abs(fa - fb).max()


@pytest.fixture(scope='module')
def samples(tmp_path_factory):
    folder = tmp_path_factory.mktemp('dist')
    infos, images, labels = make_images(str(folder), SIZES, seed=7,
                                        boxes_per_image=5)
    ds = ListDataset(infos)
    t = YOLOv7MosaicPerspective(img_scale=(S, S), mosaic=1.0, **HYP)
    random.seed(11)
    np.random.seed(11)
    ours = [t(dict(ds.get_data_info(i % len(ds)), dataset=ds))
            ['gt_bboxes'].numpy() for i in range(N)]
    random.seed(12)
    ref = [official_sample(i % len(ds), images, labels) for i in range(N)]
    return ours, ref


def test_boxes_per_sample_agree(samples):
    ours, ref = (np.array([len(b) for b in s]) for s in samples)
    se = np.sqrt(ours.var() / N + ref.var() / N)
    assert abs(ours.mean() - ref.mean()) < 4 * se
    assert ks_statistic(ours, ref) < 1.95 * np.sqrt(2 / N)  # alpha 0.001


@pytest.mark.parametrize('side', ['width', 'height'])
def test_box_sizes_agree(samples, side):
    col = {'width': (2, 0), 'height': (3, 1)}[side]
    ours, ref = (np.concatenate([b[:, col[0]] - b[:, col[1]] for b in s])
                 for s in samples)
    # two-sample Kolmogorov-Smirnov at alpha 0.001
    n, m = len(ours), len(ref)
    assert ks_statistic(ours, ref) < 1.95 * np.sqrt((n + m) / (n * m))
    rng = np.random.default_rng(0)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        boot = [np.quantile(rng.choice(ref, len(ref)), q) -
                np.quantile(rng.choice(ours, len(ours)), q)
                for _ in range(200)]
        diff = np.quantile(ref, q) - np.quantile(ours, q)
        assert abs(diff) < 4 * np.std(boot) + 0.5, (q, diff)


def test_the_check_tells_apart_another_scale_range(samples, tmp_path):
    """The same check rejects a pipeline with another scale range
    (hyp scale 0.2: U(0.8, 1.3) instead of U(0.5, 1.6))."""
    infos, _, _ = make_images(str(tmp_path), SIZES, seed=7,
                              boxes_per_image=5)
    ds = ListDataset(infos)
    wrong = YOLOv7MosaicPerspective(img_scale=(S, S), **dict(HYP, scale=0.2))
    random.seed(13)
    boxes = [wrong(dict(ds.get_data_info(i % len(ds)), dataset=ds))
             ['gt_bboxes'].numpy() for i in range(N)]
    widths = np.concatenate([b[:, 2] - b[:, 0] for b in boxes])
    ref = np.concatenate([b[:, 2] - b[:, 0] for b in samples[1]])
    n, m = len(widths), len(ref)
    assert ks_statistic(widths, ref) > 1.95 * np.sqrt((n + m) / (n * m))
