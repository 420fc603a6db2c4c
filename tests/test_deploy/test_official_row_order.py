"""``--nms none`` rows in the official export order (per level: anchor, row,
column), against the official ``IDetect.forward`` with ``--grid`` written out
here from ``models/yolo.py``: ``x.view(bs, na, no, ny, nx).permute(0, 1, 3,
4, 2)``, decoded, then ``view(bs, -1, no)`` and concatenated over levels."""
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

import mmyolo_ext  # noqa: F401
from helpers.official_models import (official_decoded_order,
                                     official_grid_forward)
from helpers.paths import ROOT
from mmyolo_ext.deploy.onnx_export import ExportedDetector, export_onnx

SIZE = (96, 128)  # (h, w): levels of 12x16, 6x8 and 3x4 cells


@pytest.fixture(scope='module')
def detector():
    cfg = Config.fromfile(str(ROOT / 'configs' / 'yolov7_tiny_demo.py'))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    return model.eval()


def spiked_maps(head, spike):
    """Raw maps with every logit -8 except the objectness of one (level,
    anchor, row, column), and box logits that differ per position."""
    torch.manual_seed(0)
    no = 5 + head.num_classes
    maps = []
    for level, stride in enumerate(head.featmap_strides):
        ny, nx = SIZE[0] // stride, SIZE[1] // stride
        raw = torch.randn(1, head.num_base_priors, no, ny, nx)
        raw[:, :, 4] = -8.
        if spike[0] == level:
            _, anchor, row, col = spike
            raw[0, anchor, 4, row, col] = 8.
        maps.append(raw.view(1, -1, ny, nx))
    return maps


def test_rows_follow_official_order(detector, monkeypatch):
    head = detector.bbox_head
    exported = ExportedDetector(detector)
    na = head.num_base_priors
    for spike in [(0, 0, 0, 1), (0, 2, 5, 3), (1, 1, 4, 7), (2, 2, 2, 0),
                  (2, 0, 1, 3)]:
        maps = spiked_maps(head, spike)
        monkeypatch.setattr(exported.detector.bbox_head, 'forward',
                            lambda feats, maps=maps: maps)
        with torch.no_grad():
            rows = exported(torch.rand(1, 3, *SIZE))
        ref = official_grid_forward(maps, head.anchors, head.featmap_strides)
        # the official class column of a one-class model is replaced by 1
        # (documented); the demo has three classes, so all columns compare
        assert rows.shape == ref.shape
        torch.testing.assert_close(rows, ref, atol=1e-4, rtol=1e-5)
        # the index arithmetic a port of the official C++/TensorRT code does
        level, anchor, row, col = spike
        offset = sum(na * (SIZE[0] // s) * (SIZE[1] // s)
                     for s in head.featmap_strides[:level])
        ny, nx = (SIZE[0] // head.featmap_strides[level],
                  SIZE[1] // head.featmap_strides[level])
        index = offset + anchor * ny * nx + row * nx + col
        assert int(rows[0, :, 4].argmax()) == index
        stride = head.featmap_strides[level]
        assert col * stride - stride / 2 <= rows[0, index, 0] <= (
            col + 1.5) * stride
        assert row * stride - stride / 2 <= rows[0, index, 1] <= (
            row + 1.5) * stride


def test_onnx_rows_in_official_order(detector, tmp_path):
    ort = pytest.importorskip('onnxruntime')
    path = tmp_path / 'none.onnx'
    export_onnx(detector, str(path), SIZE)
    images = torch.rand(1, 3, *SIZE)
    head = detector.bbox_head
    with torch.no_grad():
        ref = official_grid_forward(
            detector(images, mode='tensor')[:head.num_levels], head.anchors,
            head.featmap_strides)
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    (out, ) = sess.run(None, {'images': images.numpy()})
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize('num_classes', [3, 1])
def test_official_decode_equals_the_heads_decode(num_classes):
    """``decode_official`` (the export's planes-first form) against
    ``decode`` (MMYOLO's coder on flattened maps) put in the official row
    order; with one class the class column is 1."""
    cfg = Config.fromfile(str(ROOT / 'configs' / 'yolov7_tiny_demo.py'))
    cfg.model.bbox_head.head_module.num_classes = num_classes
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        head = MODELS.build(cfg.model).bbox_head
    torch.manual_seed(num_classes)
    no = 5 + num_classes
    maps = [torch.randn(2, head.num_base_priors * no, SIZE[0] // s,
                        SIZE[1] // s) * 3 for s in head.featmap_strides]
    rows = head.decode_official(maps)
    ref = official_decoded_order(head, maps)
    torch.testing.assert_close(rows[..., :4], ref[..., :4], atol=1e-3,
                               rtol=1e-5)
    torch.testing.assert_close(rows[..., 4:], ref[..., 4:])
    if num_classes == 1:
        assert torch.all(rows[..., 5] == 1)
