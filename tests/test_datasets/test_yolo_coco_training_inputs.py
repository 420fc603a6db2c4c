"""The same data in the YOLO layout and as COCO json trains on the same
inputs: the custom recipe's training pipeline (mosaic, random affine, HSV,
flip) gives the same images and boxes from YOLODataset as from MMYOLO's
YOLOv5CocoDataset, sample by sample, under the same seeds."""
import random
from pathlib import Path

import numpy as np
import torch
from mmengine.registry import init_default_scope

from mmyolo_ext.demo_data import export_yolo_layout, generate_shapes_dataset
from mmyolo_ext.engine.config_variables import load_config
from mmyolo_ext.registry import DATASETS

from helpers.paths import ROOT


def test_yolo_layout_and_coco_json_give_the_same_training_samples(
        tmp_path):
    coco_root = tmp_path / 'shapes'
    generate_shapes_dataset(str(coco_root), num_train=6, num_val=1,
                            img_size=96, seed=3)
    data_yaml = export_yolo_layout(str(coco_root), str(tmp_path / 'yolo'))
    cfg = load_config(
        str(ROOT / 'configs' / 'yolov7_tiny_custom.py'),
        dict(data_yaml=data_yaml, img_scale=(96, 96)))
    init_default_scope('mmyolo')
    pipeline = cfg.train_dataloader.dataset.pipeline
    yolo = DATASETS.build(cfg.train_dataloader.dataset)
    coco = DATASETS.build(
        dict(type='mmyolo.YOLOv5CocoDataset', data_root=str(coco_root),
             ann_file='annotations/instances_train.json',
             data_prefix=dict(img='train/'),
             metainfo=dict(classes=tuple(cfg.class_names)),
             filter_cfg=dict(filter_empty_gt=False, min_size=0),
             pipeline=pipeline))
    assert len(yolo) == len(coco) == 6
    compared = 0
    for index in range(len(yolo)):
        samples = []
        for dataset in (yolo, coco):
            random.seed(index)
            np.random.seed(index)
            torch.manual_seed(index)
            samples.append(dataset[index])
        a, b = (s['data_samples'] for s in samples)
        assert Path(a.img_path).name == Path(b.img_path).name
        # the same files (hard links): the same pixels after the pipeline
        assert torch.equal(samples[0]['inputs'], samples[1]['inputs'])
        assert torch.equal(a.gt_instances.labels, b.gt_instances.labels)
        # YOLO rows hold 10 significant digits of the normalized box
        torch.testing.assert_close(
            a.gt_instances.bboxes.tensor, b.gt_instances.bboxes.tensor,
            atol=1e-3, rtol=0)
        compared += len(a.gt_instances.labels)
    assert compared > 0
