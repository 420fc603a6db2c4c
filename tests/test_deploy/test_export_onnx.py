"""ONNX export verified in onnxruntime against PyTorch: raw decoded outputs
(official formulas re-derived here from the unfused model's raw maps), NMS
in the graph against a single-label NMS of those boxes (mmcv), dynamic
batch and size, fp16, the TensorRT graph, the architectures, the CLI."""
import copy
import os
import runpy
import sys

import numpy as np
import pytest
import torch
from mmcv.ops import batched_nms
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

from helpers.calibrated_detector import (ROOT, calibrated_detector,  # noqa: E402
                                 photo_views)
from mmyolo_ext.deploy import reparameterize  # noqa: E402
from mmyolo_ext.deploy.onnx_export import (export_onnx,  # noqa: E402
                                           read_metadata)

CONF, IOU = 0.25, 0.45


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(path), options, providers=['CPUExecutionProvider'])


def official_decode(raw_maps, anchors, strides, num_classes):
    """The official inference decoding (IDetect with --grid), from the raw
    ``(bs, na * no, ny, nx)`` maps: ``(bs, N, 5 + nc)`` rows ``cx, cy, w,
    h, obj, cls...`` ordered by level, anchor, row, column (``models/yolo.py``
    ``IDetect.forward``: ``permute(0, 1, 3, 4, 2)``). A one-class
    model's class column is 1 (its score is the objectness alone).

    Also returns ``(N, 5 + nc)`` units per column (stride for cx, cy;
    anchor for w, h; 1 for the scores): errors in these units are errors of
    the sigmoid outputs, comparable across levels and anchors."""
    rows, units = [], []
    for raw, level_anchors, stride in zip(raw_maps, anchors, strides):
        bs, _, ny, nx = raw.shape
        na = len(level_anchors)
        p = raw.view(bs, na, -1, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()
        gy, gx = torch.meshgrid(
            torch.arange(ny), torch.arange(nx), indexing='ij')
        grid = torch.stack([gx, gy], -1).view(1, 1, ny, nx, 2).float()
        anchor = torch.tensor(level_anchors, dtype=torch.float32).view(
            1, na, 1, 1, 2)
        xy = (p[..., :2] * 2 - 0.5 + grid) * stride
        wh = (p[..., 2:4] * 2)**2 * anchor
        cls = p[..., 5:] if num_classes > 1 else torch.ones_like(p[..., 5:])
        level_rows = torch.cat([xy, wh, p[..., 4:5], cls], -1)
        rows.append(level_rows.reshape(bs, -1, 5 + num_classes))
        unit = torch.ones(na, ny, nx, 5 + num_classes)
        unit[..., :2] = stride
        unit[..., 2:4] = anchor[0]
        units.append(unit.reshape(-1, 5 + num_classes))
    return torch.cat(rows, 1), torch.cat(units)


def max_unit_error(out, ref, units):
    """The largest difference in the units of :func:`official_decode`."""
    return float((np.abs(out - ref) / units.numpy()).max())


def reference_detections(rows, conf, iou, max_det):
    """Single-label NMS per class of one image's official rows (mmcv):
    ``(boxes x1y1x2y2, scores, labels)`` sorted by score."""
    boxes = torch.cat([rows[:, :2] - rows[:, 2:4] / 2,
                       rows[:, :2] + rows[:, 2:4] / 2], 1)
    score, label = (rows[:, 5:] * rows[:, 4:5]).max(1)
    keep = score > conf
    dets, kept = batched_nms(boxes[keep], score[keep], label[keep],
                             dict(iou_threshold=iou))
    kept = kept[:max_det]
    return boxes[keep][kept], score[keep][kept], label[keep][kept]


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """The calibrated tiny model, its official rows on the photo views, and
    exports: decoded with dynamic batch/size, NMS in the graph with a
    dynamic batch, TensorRT NMS."""
    out = tmp_path_factory.mktemp('onnx')
    model, cfg = calibrated_detector()
    head = model.bbox_head
    images = photo_views((160, 160))
    other_size = photo_views((128, 192))
    fused = reparameterize(copy.deepcopy(model))
    rows, units, unfused_rows = {}, {}, {}
    with torch.no_grad():
        for size, x in (('160', images), ('128x192', other_size)):
            rows[size], units[size] = official_decode(
                fused(x, mode='tensor'), head.anchors, head.featmap_strides,
                head.num_classes)
            unfused_rows[size] = official_decode(
                model(x, mode='tensor')[:head.num_levels], head.anchors,
                head.featmap_strides, head.num_classes)[0]
    files = dict(
        none=out / 'none.onnx', onnx=out / 'nms.onnx', trt=out / 'trt.onnx')
    export_onnx(copy.deepcopy(model), str(files['none']), (160, 160),
                dynamic='all')
    export_onnx(copy.deepcopy(model), str(files['onnx']), (160, 160),
                dynamic='batch', nms='onnx', conf_thres=CONF, iou_thres=IOU,
                max_det=60)
    export_onnx(copy.deepcopy(model), str(files['trt']), (160, 160),
                dynamic='batch', nms='trt', conf_thres=CONF, iou_thres=IOU,
                max_det=60)
    return dict(model=model, cfg=cfg, images=images, other=other_size,
                rows=rows, units=units, unfused_rows=unfused_rows, files=files,
                dir=out)


def test_raw_outputs_equal_pytorch_dynamic_size(tiny):
    sess = session(tiny['files']['none'])
    for size, x in (('160', tiny['images']), ('128x192', tiny['other'])):
        (out, ) = sess.run(None, {'images': x.numpy()})
        ref = tiny['rows'][size].numpy()
        assert out.shape == ref.shape  # (3, N, 5 + 3)
        # not degenerate: boxes of many sizes, scores spread over (0, 1)
        assert 0.05 < (ref[..., 4] > 0.1).mean() < 0.5
        assert ref[..., 5:].std() > 0.2 and np.ptp(ref[..., 2]) > 50
        units = tiny['units'][size]
        # the exported (fused) model in PyTorch, and the unfused one: float32
        # rounding only. This network's float32 logits are 2.7e-4 from its
        # float64 ones in PyTorch itself, so 2e-4 in sigmoid units is as
        # close as two float32 runtimes can agree
        assert max_unit_error(out, ref, units) < 2e-4
        assert max_unit_error(out, tiny['unfused_rows'][size].numpy(),
                              units) < 3e-4
    meta = read_metadata(tiny['files']['none'])
    assert meta['nms'] == 'none' and meta['stride'] == 32
    assert meta['class_names'] is None and meta['num_classes'] == 3


def _check_detections(outputs, index, ref):
    num_dets, boxes, scores, classes = outputs
    ref_boxes, ref_scores, ref_labels = ref
    n = int(num_dets[index, 0])
    assert n == len(ref_scores)
    # matched one to one, not by rank: near-tied scores may swap places;
    # float32 rounding of the decoded boxes (see the raw-output test)
    unmatched = list(range(n))
    for box, score, label in zip(ref_boxes.numpy(), ref_scores.numpy(),
                                 ref_labels.numpy()):
        match = [
            j for j in unmatched
            if classes[index, j] == label and abs(scores[index, j] - score) <
            1e-4 and np.abs(boxes[index, j] - box).max() < 1e-2
        ]
        assert match, (box, score, label)
        unmatched.remove(match[0])
    assert (np.diff(scores[index, :n]) <= 0).all()  # sorted by score
    # the rows past num_dets are zero
    assert not boxes[index, n:].any() and not scores[index, n:].any()
    assert not classes[index, n:].any()


def test_onnx_nms_equals_single_label_nms_and_dynamic_batch(tiny):
    sess = session(tiny['files']['onnx'])
    outputs = sess.run(None, {'images': tiny['images'].numpy()})
    assert [o.dtype for o in outputs] == [np.int32, np.float32, np.float32,
                                          np.int32]
    assert [o.shape for o in outputs] == [(3, 1), (3, 60, 4), (3, 60),
                                          (3, 60)]
    counts = []
    for i in range(3):
        rows = tiny['rows']['160'][i]
        ref = reference_detections(rows, CONF, IOU, 60)
        candidates = int(((rows[:, 5:] * rows[:, 4:5]).max(1)[0] > CONF).sum())
        counts.append((candidates, len(ref[1])))
        _check_detections(outputs, i, ref)
        # batch 1 gives this image's batch-3 results
        single = sess.run(None, {'images': tiny['images'][i:i + 1].numpy()})
        for got, batched in zip(single, outputs):
            np.testing.assert_allclose(got[0], batched[i], atol=1e-4)
    # the cases exercised: NMS suppressed boxes, max_det cut, several
    # classes kept
    assert any(c > k for c, k in counts), counts
    assert any(k == 60 for _, k in counts) and any(k < 60 for _, k in counts)
    assert len(np.unique(outputs[3][0, :int(outputs[0][0, 0])])) == 3


def test_trt_graph_has_efficient_nms_plugin(tiny):
    model = onnx.load(str(tiny['files']['trt']))
    nodes = [n for n in model.graph.node if n.op_type == 'EfficientNMS_TRT']
    assert len(nodes) == 1
    node = nodes[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a)
             for a in node.attribute}
    assert attrs == dict(
        background_class=-1, box_coding=0, iou_threshold=pytest.approx(IOU),
        max_output_boxes=60, plugin_version=b'1', score_activation=0,
        score_threshold=pytest.approx(CONF))
    assert node.domain == 'TRT'
    # inputs: boxes (bs, N, 4) and per-class scores (bs, N, nc)
    assert len(node.input) == 2 and len(node.output) == 4
    elem = onnx.TensorProto
    outputs = {
        o.name: (o.type.tensor_type.elem_type,
                 [d.dim_param or d.dim_value
                  for d in o.type.tensor_type.shape.dim])
        for o in model.graph.output
    }
    assert outputs == {
        'num_dets': (elem.INT32, ['batch', 1]),
        'det_boxes': (elem.FLOAT, ['batch', 60, 4]),
        'det_scores': (elem.FLOAT, ['batch', 60]),
        'det_classes': (elem.INT32, ['batch', 60]),
    }
    assert list(node.output) == list(outputs)


def test_fp16_export_runs_in_onnxruntime(tiny):
    path = tiny['dir'] / 'half.onnx'
    export_onnx(copy.deepcopy(tiny['model']), str(path), (160, 160), fp16=True)
    sess = session(path)
    assert sess.get_inputs()[0].type == 'tensor(float16)'
    (out, ) = sess.run(None, {'images': tiny['images'][:1].numpy().astype(
        np.float16)})
    assert out.dtype == np.float16
    ref = tiny['rows']['160'][0].numpy()
    out = out[0].astype(np.float32)
    # half precision: logits rounded to ~1e-3 of ~10, at every layer
    units = tiny['units']['160'].numpy()
    error = np.abs(out - ref) / units
    assert error.max() < 0.15 and error.mean() < 2e-2, (error.max(),
                                                       error.mean())


def test_l_exports_and_runs(tmp_path):
    """yolov7 (L) at full width, unfused in PyTorch; the other P5 and the P6
    models (ReOrg stem, DownC, E-ELAN, four levels, auxiliary head dropped)
    in test_all_architectures_export."""
    _export_and_compare(tmp_path, 'l', (64, 64))


@pytest.mark.skipif(
    not os.environ.get('MMYOLO_EXT_ALL_ARCHS'),
    reason='X/W6/E6/D6/E6E exports take 15-40 s each on 2 cores; set '
    'MMYOLO_EXT_ALL_ARCHS=1')
@pytest.mark.parametrize('arch', ['x', 'w6', 'e6', 'd6', 'e6e'])
def test_all_architectures_export(tmp_path, arch):
    _export_and_compare(tmp_path, arch, (64, 64) if arch == 'x' else
                        (128, 128))


def _export_and_compare(tmp_path, arch, size):
    cfg = Config.fromfile(str(ROOT / 'configs' / f'yolov7_{arch}_coco.py'))
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model).eval()
    head = model.bbox_head
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = model(x, mode='tensor')
    # the P6 training model returns lead and auxiliary maps; rows use lead
    assert len(raw) == head.num_levels  # eval: lead maps only
    ref, units = official_decode(raw[:head.num_levels], head.anchors,
                                 head.featmap_strides, head.num_classes)
    ref = ref.numpy()
    path = tmp_path / f'{arch}.onnx'
    export_onnx(model, str(path), size)
    (out, ) = session(path).run(None, {'images': x.numpy()})
    assert out.shape == ref.shape == (1, 3 * sum(
        (size[0] // s) * (size[1] // s) for s in head.featmap_strides), 85)
    assert np.isfinite(out).all()
    # the unfused model in PyTorch: the folding's rounding too
    assert max_unit_error(out, ref, units) < 3e-4


def test_export_cli_loads_checkpoint_and_simplifies(tiny, tmp_path,
                                                    monkeypatch):
    """tools/deployment/export_onnx.py on a saved checkpoint, --nms onnx --simplify:
    the detections of the PyTorch model's official rows."""
    ckpt = tmp_path / 'model.pth'
    torch.save(dict(state_dict=tiny['model'].state_dict(), meta=dict()), ckpt)
    out = tmp_path / 'cli.onnx'
    monkeypatch.setattr(sys, 'argv', [
        'export_onnx.py', str(ROOT / 'configs' / 'yolov7_tiny_demo.py'),
        str(ckpt), '--out', str(out), '--img-size', '160', '--nms', 'onnx',
        '--max-det', '100', '--simplify'
    ])
    runpy.run_path(str(ROOT / 'tools' / 'deployment' / 'export_onnx.py'), run_name='__main__')
    meta = read_metadata(str(out))
    assert meta['class_names'] == ['circle', 'rectangle', 'triangle']
    outputs = session(out).run(None, {'images': tiny['images'][:1].numpy()})
    ref = reference_detections(tiny['rows']['160'][0], CONF, IOU, 100)
    _check_detections(outputs, 0, ref)


def test_export_rejects_bad_sizes(tiny, tmp_path):
    with pytest.raises(ValueError, match='multiples of the model stride 32'):
        export_onnx(copy.deepcopy(tiny['model']), str(tmp_path / 'x.onnx'),
                    (100, 160))
    with pytest.raises(ValueError, match="nms must be one of"):
        export_onnx(copy.deepcopy(tiny['model']), str(tmp_path / 'x.onnx'),
                    (160, 160), nms='tensorrt')


def test_readme_snippet_runs_and_draws_the_detections(tiny, tmp_path,
                                                      monkeypatch):
    """The docs' onnxruntime example, executed as written on the photo
    with an --nms onnx export; its boxes are drawn where the letterbox
    mapping puts the detections in the original image."""
    import shutil

    import cv2
    from helpers.calibrated_detector import PHOTO
    doc = (ROOT / 'docs' / 'predict_and_deploy.md').read_text()
    section = doc[doc.index('## Export to ONNX'):]
    code = section[section.index('```python\n') + 10:]
    code = code[:code.index('```')]
    shutil.copy(tiny['files']['onnx'], tmp_path / 'tiny_e2e.onnx')
    shutil.copy(PHOTO, tmp_path / 'photo.jpg')
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, 'predict_and_deploy.md', 'exec'), namespace)
    drawn = cv2.imread(str(tmp_path / 'photo_boxes.jpg'))
    original = cv2.imread(str(PHOTO))
    assert drawn.shape == original.shape
    # the first detection, mapped back here independently of the snippet
    num = int(namespace['num_dets'][0, 0])
    assert num > 0
    box = namespace['boxes'][0, 0]
    height, width = original.shape[:2]
    ratio = min(160 / height, 160 / width)
    pad_x = (160 - round(width * ratio)) // 2
    pad_y = (160 - round(height * ratio)) // 2
    x1, y1, x2, y2 = ((box - [pad_x, pad_y, pad_x, pad_y]) / ratio).round()
    # a green edge on its left side, inside the image (jpeg-compressed)
    y = int(np.clip((y1 + y2) / 2, 2, height - 3))
    x = int(np.clip(x1, 2, width - 3))
    b, g, r = drawn[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).mean(0)
    assert g > 180 and b < 90 and r < 90, (x, y, (b, g, r))
