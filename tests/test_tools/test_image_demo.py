"""tools/deployment/image_demo.py: drawn images, mmdet's preds/*.json and the official
detect.py txt rows of the model's own predictions, batched or not, over
images (an unreadable one skipped) and a video."""
import contextlib
import io
import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from mmengine.dataset import Compose
from mmengine.registry import DefaultScope
from helpers.seeded_detector import DEMO_CONFIG, seeded_detector

from mmyolo_ext.deploy import load_detector
from helpers.tools import load_tool

SCORE_THR = 0.05
CLASSES = ('circle', 'rectangle', 'triangle')


def _load_tool():
    return load_tool('tools/deployment/image_demo.py')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('demo')
    model, _ = seeded_detector()
    with torch.no_grad():  # smaller head logits: scores of 0.02-0.2, not 1
        for conv in model.bbox_head.head_module.lead_convs:
            conv.weight.mul_(0.1)
    ckpt = tmp / 'model.pth'
    torch.save(
        dict(state_dict=model.state_dict(),
             meta=dict(dataset_meta=dict(classes=CLASSES))), ckpt)
    rng = np.random.default_rng(0)
    images = tmp / 'images'
    images.mkdir()
    for i, (h, w) in enumerate([(72, 96), (96, 64), (80, 80)]):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        cv2.rectangle(img, (10, 12), (w // 2, h // 2), (30, 200, 40), -1)
        cv2.circle(img, (w * 2 // 3, h * 2 // 3), 12, (200, 30, 30), -1)
        cv2.imwrite(str(images / f'img{i}.png'), img)
    setup = dict(tmp=tmp, ckpt=ckpt, images=images, tool=_load_tool())
    # the runs the tests read: batch 2 over a folder that also holds an
    # unreadable file, batch 1 over the good images
    folder = tmp / 'with_bad'
    shutil.copytree(images, folder)
    (folder / 'broken.jpg').write_bytes(b'not an image at all')
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert run_demo(setup, folder, tmp / 'out_bs2', '--batch-size',
                        2) == 0
    setup['stderr'] = stderr.getvalue()
    assert run_demo(setup, images, tmp / 'out_bs1', '--batch-size', 1) == 0
    setup['reference'] = load_detector(
        str(DEMO_CONFIG), str(ckpt), deploy=True)
    return setup


def run_demo(setup, inputs, out_dir, *extra):
    return setup['tool'].main([
        str(inputs), str(DEMO_CONFIG), '--weights', str(setup['ckpt']),
        '--out-dir', str(out_dir), '--device', 'cpu', '--pred-score-thr',
        str(SCORE_THR), '--save-txt', *map(str, extra)
    ])


def reference_predictions(setup, path):
    """The fused model's own predict() on an image, through the config's
    test pipeline (annotations step left out)."""
    model = setup['reference']  # fused, contiguous (NCHW) memory format
    cfg = model.cfg
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        pipeline = Compose([
            t for t in cfg.test_dataloader.dataset.pipeline
            if t['type'] != 'LoadAnnotations'
        ])
        data = pipeline(dict(img_path=str(path), img_id=0))
        batch = dict(inputs=[data['inputs']],
                     data_samples=[data['data_samples']])
        with torch.no_grad():
            return model.test_step(batch)[0].pred_instances


def assert_same_detections(pred: dict, ref) -> None:
    """Same detections up to float32 rounding (other batch sizes and memory
    formats run other conv kernels): the same number, and each box found
    in the other set with its label and score; near-tied scores may swap
    places, so the sets are matched rather than the rows."""
    ref = dict(bboxes=np.asarray(ref['bboxes']), scores=np.asarray(
        ref['scores']), labels=np.asarray(ref['labels'])) if isinstance(
            ref, dict) else dict(bboxes=ref.bboxes.numpy(),
                                 scores=ref.scores.numpy(),
                                 labels=ref.labels.numpy())
    boxes = np.asarray(pred['bboxes'])
    assert len(boxes) == len(ref['bboxes']) > 10
    close = ((np.abs(boxes[:, None] - ref['bboxes'][None]).max(-1) < 1e-2)
             & (np.array(pred['labels'])[:, None] == ref['labels'][None])
             & (np.abs(np.array(pred['scores'])[:, None] -
                       ref['scores'][None]) < 1e-5))
    assert close.any(1).all() and close.any(0).all()


def read_rows(path):
    return np.array([[float(v) for v in line.split()]
                     for line in path.read_text().splitlines()]).reshape(-1, 6)


def test_folder_json_and_txt_match_predict(setup):
    out = setup['tmp'] / 'out_bs2'
    assert 'skipped' in setup['stderr'] and 'broken.jpg' in setup['stderr']
    assert not (out / 'preds' / 'broken.json').exists()

    for path in sorted(setup['images'].iterdir()):
        pred = json.loads((out / 'preds' / (path.stem + '.json')).read_text())
        assert (out / 'vis' / path.name).exists()
        ref = reference_predictions(setup, path)
        assert_same_detections(pred, ref)

        # txt rows: the JSON boxes above the threshold, as normalized
        # centre and size of the original image (independent formula)
        h, w = cv2.imread(str(path)).shape[:2]
        boxes = np.array(pred['bboxes']).reshape(-1, 4)
        scores = np.array(pred['scores'])
        keep = scores > SCORE_THR
        x1, y1, x2, y2 = boxes[keep].T
        expected = np.stack([
            np.array(pred['labels'])[keep], (x1 + x2) / (2 * w),
            (y1 + y2) / (2 * h), (x2 - x1) / w, (y2 - y1) / h, scores[keep]
        ], axis=1)
        rows = read_rows(out / 'labels' / (path.stem + '.txt'))
        assert len(rows) > 0
        np.testing.assert_allclose(rows, expected, rtol=1e-5, atol=1e-6)


def test_batch_two_equals_batch_one(setup):
    outs = {
        bs: {
            p.name: json.loads(p.read_text())
            for p in (setup['tmp'] / f'out_bs{bs}' / 'preds').iterdir()
        }
        for bs in (1, 2)
    }
    assert sorted(outs[1]) == sorted(outs[2]) and len(outs[1]) == 3
    for name, pred in outs[1].items():
        assert_same_detections(pred, outs[2][name])


def test_video_round_trip(setup):
    video = setup['tmp'] / 'clip.mp4'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'mp4v'), 7,
                             (96, 72))
    for path in sorted(setup['images'].iterdir()):
        writer.write(cv2.resize(cv2.imread(str(path)), (96, 72)))
    writer.release()
    out = setup['tmp'] / 'out_video'
    assert run_demo(setup, video, out, '--batch-size', 2) == 0
    drawn = cv2.VideoCapture(str(out / 'vis' / 'clip.mp4'))
    frames = 0
    while drawn.read()[0]:
        frames += 1
    assert frames == 3
    assert drawn.get(cv2.CAP_PROP_FPS) == pytest.approx(7)
    assert (drawn.get(cv2.CAP_PROP_FRAME_WIDTH),
            drawn.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (96, 72)
    assert sorted(p.name for p in (out / 'labels').iterdir()) == [
        'clip_1.txt', 'clip_2.txt', 'clip_3.txt'
    ]
    assert len(list((out / 'preds').iterdir())) == 3
