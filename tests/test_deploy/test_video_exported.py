"""image_demo.py on a video through the exported model: the ONNX export
(onnxruntime) and the OpenVINO FP32 IR give, frame by frame, the PyTorch
checkpoint's detections (preds/<video>_<frame>.json)."""
import copy
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip('onnxruntime')
pytest.importorskip('openvino')

from helpers.calibrated_detector import (PHOTO, ROOT,  # noqa: E402
                                         calibrated_detector, letterbox)
from helpers.concurrent_runs import run_all  # noqa: E402
from mmyolo_ext.deploy.onnx_export import export_onnx  # noqa: E402
from mmyolo_ext.deploy.openvino_export import export_openvino  # noqa: E402

FRAMES = 4


def write_video(path):
    """The photograph panned across a 240x180 frame, FRAMES frames."""
    photo = letterbox(cv2.imread(str(PHOTO)), (180, 240))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 5,
                             (240, 180))
    for i in range(FRAMES):
        writer.write(np.roll(photo, 12 * i, axis=1))
    writer.release()


def detect(video, weights, out):
    result = subprocess.run([
        sys.executable, str(ROOT / 'tools' / 'deployment' / 'image_demo.py'),
        str(video), str(ROOT / 'configs' / 'yolov7_tiny_demo.py'),
        '--weights', str(weights), '--out-dir', str(out), '--device', 'cpu',
        '--pred-score-thr', '0.2'
    ], capture_output=True, text=True, cwd=ROOT,
        env={'OMP_NUM_THREADS': '1', 'PATH': '/usr/bin:/bin'})
    assert result.returncode == 0, result.stderr[-3000:]
    preds = {}
    for path in sorted((out / 'preds').glob('*.json')):
        pred = json.loads(path.read_text())
        keep = np.array(pred['scores']) > 0.2
        preds[path.stem] = (np.array(pred['labels'])[keep],
                            np.array(pred['scores'])[keep],
                            np.array(pred['bboxes']).reshape(-1, 4)[keep])
    return preds


def test_video_through_exports_gives_pytorch_detections(tmp_path):
    model, _ = calibrated_detector()
    video = tmp_path / 'clip.avi'
    write_video(video)
    ckpt = tmp_path / 'model.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    onnx_file = tmp_path / 'model.onnx'
    export_onnx(copy.deepcopy(model), str(onnx_file), (320, 320),
                dynamic='all')
    xml = tmp_path / 'ir' / 'model.xml'
    export_openvino(copy.deepcopy(model), str(xml), (320, 320))
    # the three runs side by side (each single-threaded)
    ref, *exported = run_all(*[
        lambda w=weights, o=out: detect(video, w, tmp_path / o)
        for weights, out in ((ckpt, 'pytorch'), (onnx_file, 'onnx'),
                             (xml, 'xml'))
    ])
    assert sorted(ref) == [f'clip_{i}' for i in range(1, FRAMES + 1)]
    assert sum(len(r[0]) for r in ref.values()) >= FRAMES  # something found
    for weights, got in zip((onnx_file, xml), exported):
        assert sorted(got) == sorted(ref)
        found = total = 0
        for frame, (labels, scores, boxes) in ref.items():
            g_labels, g_scores, g_boxes = got[frame]
            assert abs(len(g_labels) - len(labels)) <= 2, (weights, frame)
            for label, score, box in zip(labels, scores, boxes):
                close = ((g_labels == label)
                         & (np.abs(g_scores - score) < 1e-3)
                         & (np.abs(g_boxes - box).max(1) < 0.05))
                found += bool(close.any())
                total += 1
        # float32 rounding of another runtime may flip an NMS decision
        # between two overlapping boxes at the IoU threshold (seen once in
        # OpenVINO on this seeded model, whose frames hold ~100 crowded
        # detections); everything else is the same detection
        assert found >= 0.97 * total, (weights, found, total)
