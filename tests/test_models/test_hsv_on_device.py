"""HSV on the model's device: ``YOLOv7HSVAug(on_device=True)`` draws the
gains in the data workers and ``YOLOv7DataPreprocessor`` applies them to the
batch. Checked against the official ``augment_hsv`` (written out in
tests/helpers/official_augment.py), OpenCV's own conversions over every
colour, and the workers' form, batch for batch."""
import copy
import os
import random
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope

from mmyolo_ext.datasets import yolov5_collate_with_files
from mmyolo_ext.datasets.transforms import YOLOv7HSVAug
from mmyolo_ext.demo_data import export_yolo_layout, generate_shapes_dataset
from mmyolo_ext.engine.config_variables import load_config
from mmyolo_ext.models.data_preprocessors import (YOLOv7DataPreprocessor,
                                                  check_hsv_placement,
                                                  hsv_augment_torch)
from mmyolo_ext.models.data_preprocessors.batch_hsv import (bgr_to_hsv,
                                                            hsv_to_bgr)
from mmyolo_ext.registry import DATASETS

from helpers.official_augment import augment_hsv
from helpers.paths import ROOT

HYP = dict(hsv_h=0.015, hsv_s=0.7, hsv_v=0.4)  # hyp.scratch.p5 / custom


def _photo(seed: int, size=(48, 64)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def test_workers_hsv_is_the_official_augment_hsv():
    for seed in range(5):
        img = _photo(seed)
        np.random.seed(seed)
        ours = YOLOv7HSVAug(**HYP).transform(dict(img=img.copy()))['img']
        np.random.seed(seed)
        gains = np.random.uniform(-1, 1, 3) * [0.015, 0.7, 0.4] + 1
        np.testing.assert_array_equal(ours, augment_hsv(img, gains))


def test_on_device_draws_the_same_gains_and_leaves_the_image():
    img = _photo(0)
    np.random.seed(7)
    left = YOLOv7HSVAug(**HYP, on_device=True).transform(dict(img=img))
    np.random.seed(7)
    expected = np.random.uniform(-1, 1, 3) * [0.015, 0.7, 0.4] + 1
    np.testing.assert_array_equal(left['hsv_gains'], expected)
    assert left['img'] is img  # nothing applied in the worker


def test_torch_bgr_to_hsv_equals_opencv_on_every_colour():
    # all 2^24 BGR colours, as a 4096 x 4096 image
    codes = np.arange(1 << 24, dtype=np.uint32)
    bgr = np.stack([codes & 255, (codes >> 8) & 255, codes >> 16],
                   -1).astype(np.uint8).reshape(4096, 4096, 3)
    ours = bgr_to_hsv(torch.from_numpy(bgr).permute(2, 0, 1)[None])[0]
    expected = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    np.testing.assert_array_equal(ours.permute(1, 2, 0).numpy(), expected)


def test_torch_hsv_to_bgr_equals_opencv_on_every_hsv_triple():
    # every (h < 180, s, v), rows 256 wide: OpenCV's vectorized loop covers
    # whole rows (a row's tail left to its scalar loop rounds instead of
    # truncating, so widths that are not a multiple of 64 may differ by 1)
    h, s, v = np.meshgrid(np.arange(180), np.arange(256), np.arange(256),
                          indexing='ij')
    hsv = np.stack([h, s, v], -1).astype(np.uint8).reshape(-1, 256, 3)
    ours = hsv_to_bgr(torch.from_numpy(hsv).permute(2, 0, 1)[None])[0]
    expected = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    diff = np.abs(ours.permute(1, 2, 0).numpy().astype(int) - expected)
    assert diff.max() <= 1
    assert (diff > 0).mean() < 1e-5  # float rounding, a few triples at most


def test_torch_augment_equals_the_official_on_photos():
    imgs = np.stack([_photo(s, (64, 128)) for s in range(4)])
    rng = np.random.default_rng(0)
    gains = rng.uniform(-1, 1, (4, 3)) * [0.015, 0.7, 0.4] + 1
    ours = hsv_augment_torch(
        torch.from_numpy(imgs).permute(0, 3, 1, 2), torch.from_numpy(gains))
    for i in range(4):
        diff = np.abs(ours[i].permute(1, 2, 0).numpy().astype(int) -
                      augment_hsv(imgs[i], gains[i]))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


@pytest.fixture(scope='module')
def custom_config(tmp_path_factory):
    root = tmp_path_factory.mktemp('hsv')
    generate_shapes_dataset(str(root / 'shapes'), num_train=4, num_val=1,
                            img_size=64, seed=1)
    data_yaml = export_yolo_layout(str(root / 'shapes'), str(root / 'yolo'))
    return load_config(
        str(ROOT / 'configs' / 'yolov7_tiny_custom.py'),
        dict(data_yaml=data_yaml, img_scale=(64, 64)))


def _batch(cfg, on_device: bool, seed: int = 0) -> dict:
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    for step in dataset_cfg.pipeline:
        if step['type'] == 'YOLOv7HSVAug':
            step['on_device'] = on_device
    init_default_scope('mmyolo')
    dataset = DATASETS.build(dataset_cfg)
    random.seed(seed)
    np.random.seed(seed)
    samples = [dataset[i] for i in range(len(dataset))]
    return yolov5_collate_with_files(samples)


def test_preprocessor_gives_the_batch_the_workers_give(custom_config):
    """The recipe's pipeline with HSV in the workers and on the device,
    same seed: the same batch reaches the model (OpenCV on the CPU; the
    torch form within one grey level)."""
    in_workers = _batch(custom_config, on_device=False)
    on_device = _batch(custom_config, on_device=True)
    assert 'hsv_gains' not in in_workers['data_samples']
    gains = on_device['data_samples']['hsv_gains']
    assert gains.shape == (4, 3)
    preprocessor = YOLOv7DataPreprocessor(
        mean=[0., 0., 0.], std=[255., 255., 255.], bgr_to_rgb=True)
    torch_form = hsv_augment_torch(on_device['inputs'], gains)
    expected = preprocessor(copy.deepcopy(in_workers), training=True)
    got = preprocessor(on_device, training=True)
    assert 'hsv_gains' not in got['data_samples']
    assert torch.equal(got['inputs'], expected['inputs'])
    assert torch.equal(got['data_samples']['bboxes_labels'],
                       expected['data_samples']['bboxes_labels'])
    diff = (torch_form.int() - in_workers['inputs'].int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3


def test_every_recipe_applies_hsv_once_where_it_is_drawn(custom_config):
    check_hsv_placement(custom_config)  # the recipe is consistent
    bad = copy.deepcopy(custom_config)
    bad.model.data_preprocessor.type = 'YOLOv5DetDataPreprocessor'
    with pytest.raises(ValueError, match='YOLOv5DetDataPreprocessor'):
        check_hsv_placement(bad)
    bad = copy.deepcopy(custom_config)
    bad.train_dataloader.collate_fn = dict(type='yolov5_collate')
    with pytest.raises(ValueError, match='drops the HSV gains'):
        check_hsv_placement(bad)


def test_train_tool_refuses_a_preprocessor_that_drops_the_gains(
        custom_config, tmp_path):
    data_yaml = custom_config.data_yaml
    out = subprocess.run([
        sys.executable, str(ROOT / 'tools' / 'train.py'),
        str(ROOT / 'configs' / 'yolov7_tiny_custom.py'), '--work-dir',
        str(tmp_path), '--cfg-options', f'data_yaml={data_yaml}',
        'model.data_preprocessor.type=YOLOv5DetDataPreprocessor'
    ], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert out.returncode != 0
    assert 'leaves the HSV gains to the data preprocessor' in out.stderr, \
        out.stderr[-2000:]


def test_mixed_batches_are_refused():
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmengine.structures import InstanceData
    samples = []
    for gains in (np.ones(3), None):
        sample = DetDataSample(metainfo=dict(img_path='a.jpg'))
        if gains is not None:
            sample.set_metainfo(dict(hsv_gains=gains))
        sample.gt_instances = InstanceData(
            bboxes=HorizontalBoxes(torch.zeros(0, 4)),
            labels=torch.zeros(0, dtype=torch.long))
        samples.append(dict(inputs=torch.zeros(3, 8, 8, dtype=torch.uint8),
                            data_samples=sample))
    with pytest.raises(ValueError, match='only some samples'):
        yolov5_collate_with_files(samples)
