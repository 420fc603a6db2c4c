"""tools/test.py CONFIG model.onnx: an export evaluated in onnxruntime gives
the PyTorch model's detections and mAP (same dataset, pipeline, metric)."""
import copy
import json
import pickle
import runpy
import sys

import pytest
import torch
from mmdet.evaluation import CocoMetric
from mmengine.config import Config

pytest.importorskip('onnxruntime')

from helpers.calibrated_detector import ROOT, calibrated_detector  # noqa: E402
from helpers.detections import assert_detections_found  # noqa: E402
from helpers.tiny_demo import small_eval_config
from mmyolo_ext.deploy.onnx_export import export_onnx  # noqa: E402


def run_test_tool(monkeypatch, *args):
    monkeypatch.setattr(sys, 'argv', ['test.py', *map(str, args)])
    runpy.run_path(str(ROOT / 'tools' / 'test.py'), run_name='__main__')


def coco_map(results, ann_file, classes):
    metric = CocoMetric(ann_file=str(ann_file), metric='bbox')
    metric.dataset_meta = dict(classes=classes)
    metric.process({}, copy.deepcopy(results))
    return metric.evaluate(len(results))['coco/bbox_mAP']


@pytest.fixture(scope='module')
def calibrated():
    """The calibrated demo detector, built once; each test takes a copy
    (the small config below changes the data only, not the model)."""
    model, _ = calibrated_detector(
        Config.fromfile(str(ROOT / 'configs' / 'yolov7_tiny_demo.py')))
    return model


def test_onnx_model_evaluates_like_pytorch(tmp_path, monkeypatch,
                                           calibrated):
    cfg_path = small_eval_config(tmp_path)
    model = copy.deepcopy(calibrated)
    ckpt = tmp_path / 'model.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    onnx_file = tmp_path / 'model.onnx'
    export_onnx(copy.deepcopy(model), str(onnx_file), (320, 320),
                dynamic='all')
    preds = {}
    for name, weights in (('pytorch', ckpt), ('onnx', onnx_file)):
        out = tmp_path / f'{name}.pkl'
        run_test_tool(monkeypatch, cfg_path, weights, '--out', out,
                      '--work-dir', tmp_path / 'work')
        with open(out, 'rb') as f:
            preds[name] = pickle.load(f)
    assert len(preds['pytorch']) == len(preds['onnx']) == 4
    # the batches were letterboxed to the rect batch shape, not 320
    assert preds['onnx'][0]['batch_input_shape'] != (320, 320)

    # ground truth the model can find: its own confident detections,
    # moved a little, so that the mAP is far from 0 and sensitive to
    # the boxes and scores (the shapes ground truth gives ~0 for a seeded
    # model)
    images, annotations = [], []
    gen = torch.Generator().manual_seed(0)
    for pred in preds['pytorch']:
        height, width = pred['ori_shape']
        images.append(dict(id=pred['img_id'], width=width, height=height,
                           file_name=f"{pred['img_id']}.png"))
        inst = pred['pred_instances']
        for box, score, label in zip(inst['bboxes'], inst['scores'],
                                     inst['labels']):
            if score < 0.3:
                continue
            box = box + torch.randn(4, generator=gen) * 2
            x1, y1, x2, y2 = box.tolist()
            annotations.append(dict(
                id=len(annotations) + 1, image_id=pred['img_id'],
                category_id=int(label), bbox=[x1, y1, x2 - x1, y2 - y1],
                area=(x2 - x1) * (y2 - y1), iscrowd=0))
    assert len(annotations) > 12
    classes = ('circle', 'rectangle', 'triangle')
    ann_file = tmp_path / 'pseudo_gt.json'
    ann_file.write_text(json.dumps(dict(
        images=images, annotations=annotations,
        categories=[dict(id=i, name=c) for i, c in enumerate(classes)])))
    maps = {k: coco_map(v, ann_file, classes) for k, v in preds.items()}
    print('bbox mAP on the pseudo ground truth:', maps)
    assert maps['pytorch'] > 0.3, maps
    assert abs(maps['onnx'] - maps['pytorch']) <= 0.002, maps

    # and image by image, the same detections
    for torch_pred, onnx_pred in zip(preds['pytorch'], preds['onnx']):
        a, b = torch_pred['pred_instances'], onnx_pred['pred_instances']
        confident = a['scores'] > 0.05
        assert abs(int(confident.sum()) - int((b['scores'] > 0.05).sum())
                   ) <= 1
        assert_detections_found(a, b)


def test_onnx_export_with_nms_is_refused(tmp_path, calibrated):
    from mmyolo_ext.deploy.onnxruntime_detector import ONNXRuntimeDetector
    cfg = Config.fromfile(str(ROOT / 'configs' / 'yolov7_tiny_demo.py'))
    model = copy.deepcopy(calibrated)
    onnx_file = tmp_path / 'e2e.onnx'
    export_onnx(model, str(onnx_file), (160, 160), nms='onnx')
    with pytest.raises(ValueError, match='exported with --nms onnx'):
        ONNXRuntimeDetector(str(onnx_file), cfg.model)
