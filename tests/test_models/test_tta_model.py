"""YOLOv7TTAModel: the official test.py --augment passes, merged before one
NMS, checked against plain predict() on inputs augmented in the test."""
import copy

import torch
import torch.nn.functional as F
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from helpers.seeded_detector import seeded_detector

from mmyolo_ext.models.detectors import YOLOv7TTAModel
from helpers.tools import load_tool


def letterboxed_batch(gen, h=96, w=128):
    """A batch of two letterboxed images with their metainfo (the first
    scaled by 0.5 and padded top and bottom)."""
    inputs = torch.rand(2, 3, h, w, generator=gen) * 255
    metas = [
        dict(ori_shape=(80, 256), img_shape=(h, w), batch_input_shape=(h, w),
             scale_factor=(0.5, 0.5), pad_param=[8., 8., 0., 0.]),
        dict(ori_shape=(h, w), img_shape=(h, w), batch_input_shape=(h, w),
             scale_factor=(1., 1.), pad_param=[0., 0., 0., 0.]),
    ]
    samples = [DetDataSample(metainfo=m) for m in metas]
    return dict(inputs=list(inputs.to(torch.uint8)), data_samples=samples)


def predictions(samples):
    return [s.pred_instances for s in samples]


def assert_equal(got, expected, atol=1e-4):
    for a, b in zip(got, expected):
        assert len(a.scores) > 10 and len(a.scores) == len(b.scores)
        torch.testing.assert_close(a.bboxes, b.bboxes, rtol=0, atol=atol)
        torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-6)
        assert torch.equal(a.labels, b.labels)


def plain_predict(model, inputs, metas):
    """predict() on an already preprocessed input tensor."""
    samples = [DetDataSample(metainfo=dict(m)) for m in metas]
    with torch.no_grad():
        return predictions(model.predict(inputs, samples))


def test_one_pass_reproduces_predict():
    model, _ = seeded_detector()
    gen = torch.Generator().manual_seed(0)
    batch = letterboxed_batch(gen)
    tta = YOLOv7TTAModel(model, scales=(1, ), flips=(False, ))
    with torch.no_grad():
        expected = predictions(model.test_step(copy.deepcopy(batch)))
        got = predictions(tta.test_step(copy.deepcopy(batch)))
    assert_equal(got, expected, atol=0)


def test_flipped_and_scaled_passes_map_back():
    """A flipped pass equals predict() on the mirrored input with mirrored
    boxes; a 0.5 pass equals predict() on the input resized and padded
    (grey, bottom/right, to a multiple of 32) in the test, boxes doubled."""
    model, _ = seeded_detector()
    gen = torch.Generator().manual_seed(1)
    h, w = 96, 128
    x = torch.rand(1, 3, h, w, generator=gen)
    meta = dict(ori_shape=(h, w), img_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1., 1.), pad_param=[0., 0., 0., 0.])
    batch = dict(inputs=[(x[0] * 255).round().to(torch.uint8)],
                 data_samples=[DetDataSample(metainfo=meta)])
    # the network input the preprocessor makes of it (RGB, / 255)
    x = model.data_preprocessor(copy.deepcopy(batch), False)['inputs']

    flipped = YOLOv7TTAModel(model, scales=(1, ), flips=(True, ))
    with torch.no_grad():
        got = predictions(flipped.test_step(copy.deepcopy(batch)))
    ref = plain_predict(model, x.flip(-1), [meta])[0]
    mirrored = ref.bboxes[:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) \
        + torch.tensor([w, 0, w, 0])
    assert_equal(got, [InstanceData(bboxes=mirrored, scores=ref.scores,
                                    labels=ref.labels)])

    half = YOLOv7TTAModel(model, scales=(0.5, ), flips=(False, ))
    with torch.no_grad():
        got = predictions(half.test_step(copy.deepcopy(batch)))
    small = F.interpolate(x, size=(48, 64), mode='bilinear',
                          align_corners=False)
    padded = torch.full((1, 3, 64, 64), 0.447)  # ceil(48 / 32) * 32 = 64
    padded[..., :48, :64] = small
    small_meta = dict(meta, img_shape=(64, 64), batch_input_shape=(64, 64),
                      ori_shape=(64, 64))
    ref = plain_predict(model, padded, [small_meta])[0]
    # boxes clamped to the 64 x 64 input in the reference: compare those
    # inside the image part it shares with the original
    inside = (ref.bboxes[:, 2] < 64) & (ref.bboxes[:, 3] < 48)
    got = got[0]
    got_inside = (got.bboxes[:, 2] < 128) & (got.bboxes[:, 3] < 96)
    assert inside.sum() > 5
    torch.testing.assert_close(got.bboxes[got_inside][:10],
                               ref.bboxes[inside][:10] * 2, rtol=0,
                               atol=1e-3)
    torch.testing.assert_close(got.scores[got_inside][:10],
                               ref.scores[inside][:10], rtol=0, atol=1e-6)


def test_three_passes_merge_before_nms():
    """The official three passes: the result is one NMS over the
    concatenated candidates of all passes (re-derived here with a greedy
    per-class NMS), so boxes from different passes compete in one NMS."""
    model, _ = seeded_detector()
    gen = torch.Generator().manual_seed(2)
    batch = letterboxed_batch(gen)
    tta = YOLOv7TTAModel(model)
    with torch.no_grad():
        data = model.data_preprocessor(copy.deepcopy(batch), False)
        boxes, scores = tta.decode_passes(data['inputs'])
        got = predictions(tta.test_step(copy.deepcopy(batch)))
    head = model.bbox_head
    # candidates per pass: 3 anchors per cell of the strides 8, 16, 32
    # 1, 0.83 and 0.67 of 96 x 128, padded up to multiples of 32
    sizes = [(96, 128), (96, 128), (96, 96)]
    counts = [3 * sum(-(-h // s) * -(-w // s) for s in (8, 16, 32))
              for h, w in sizes]
    assert boxes.shape[1] == sum(counts)
    bounds = torch.tensor(counts).cumsum(0)
    cfg = head.test_cfg
    for i, result in enumerate(got):
        meta = batch['data_samples'][i].metainfo
        conf = scores[i, :, 1:] * scores[i, :, :1]
        keep = (scores[i, :, 0] > cfg.score_thr)[:, None] & (
            conf > cfg.score_thr)
        rows, labels = keep.nonzero(as_tuple=True)
        cand_scores = conf[rows, labels]
        cand = boxes[i, rows].clone()
        top, left = meta['pad_param'][0], meta['pad_param'][2]
        cand -= torch.tensor([left, top, left, top])
        cand /= torch.tensor(meta['scale_factor']).repeat(2)
        kept = greedy_nms(cand, cand_scores, labels, cfg.nms.iou_threshold)
        kept = kept[:cfg.max_per_img]
        ref_boxes = cand[kept]
        hh, ww = meta['ori_shape']
        ref_boxes[:, 0::2] = ref_boxes[:, 0::2].clamp(0, ww)
        ref_boxes[:, 1::2] = ref_boxes[:, 1::2].clamp(0, hh)
        assert len(result.scores) == len(kept)
        torch.testing.assert_close(result.scores, cand_scores[kept], rtol=0,
                                   atol=1e-6)
        # the same set of detections (equal scores may come in either order)
        same = ((result.bboxes[:, None] - ref_boxes[None]).abs().amax(-1)
                < 1e-3) & (result.labels[:, None] == labels[kept][None]) & (
                    (result.scores[:, None] - cand_scores[kept][None]).abs()
                    < 1e-6)
        assert same.any(1).all() and same.any(0).all()
        # detections come from more than one pass
        sources = torch.bucketize(rows[kept], bounds, right=True)
        assert len(set(sources.tolist())) == 3


def greedy_nms(boxes, scores, labels, iou_thr):
    """Per-class greedy NMS, highest score first (the reference)."""
    order = scores.argsort(descending=True, stable=True)
    kept = []
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for idx in order.tolist():
        if suppressed[idx]:
            continue
        kept.append(idx)
        lt = torch.maximum(boxes[idx, :2], boxes[:, :2])
        rb = torch.minimum(boxes[idx, 2:], boxes[:, 2:])
        inter = (rb - lt).clamp(min=0).prod(1)
        iou = inter / (area[idx] + area - inter)
        suppressed |= (iou > iou_thr) & (labels == labels[idx])
    return torch.tensor(kept, dtype=torch.long)


def test_test_tool_tta_config_wraps_and_loads(tmp_path):
    """tools/test.py --tta: the recipe's tta_model wraps the model, the test
    pipeline stays, EMA hooks leave the run, and a training checkpoint loads
    into the wrapped detector (mmengine strips the wrapper's prefix)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope
    from mmengine.runner import load_checkpoint

    from helpers.seeded_detector import DEMO_CONFIG
    tool = load_tool('tools/test.py')

    cfg = Config.fromfile(str(DEMO_CONFIG))
    pipeline = cfg.test_dataloader.dataset.pipeline
    cfg = tool.use_tta_model(cfg)
    assert cfg.model.type == 'YOLOv7TTAModel'
    assert cfg.model.scales == (1, 0.83, 0.67)
    assert cfg.model.flips == (False, True, False)
    assert cfg.test_dataloader.dataset.pipeline == pipeline
    assert not any('EMA' in h['type'] for h in cfg.custom_hooks)

    model, _ = seeded_detector()
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'm.pth')
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        tta = MODELS.build(cfg.model)
    load_checkpoint(tta, str(tmp_path / 'm.pth'), strict=True)
    for name, value in model.state_dict().items():
        assert torch.equal(tta.module.state_dict()[name], value), name
