"""Our YOLOXSimOTAAssigner inside MMDetection's YOLOX head (drop-in)."""
import torch
from mmdet.models.dense_heads import YOLOXHead
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

import mmyolo_ext  # noqa: F401  (registers the modules)


def yolox_head_losses(assigner_type):
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        head = YOLOXHead(
            num_classes=3,
            in_channels=16,
            feat_channels=16,
            stacked_convs=1,
            strides=(8, 16, 32),
            train_cfg=ConfigDict(
                assigner=dict(type=assigner_type, center_radius=2.5)))
        feats = [torch.randn(2, 16, 128 // s, 128 // s) for s in (8, 16, 32)]
        gen = torch.Generator().manual_seed(1)
        gts = []
        for n in (4, 7):
            wh = 10 + torch.rand(n, 2, generator=gen) * 50
            xy = wh / 2 + torch.rand(n, 2, generator=gen) * (128 - wh)
            gts.append(
                InstanceData(
                    bboxes=torch.cat([xy - wh / 2, xy + wh / 2], 1),
                    labels=torch.randint(0, 3, (n, ), generator=gen)))
        metas = [dict(img_shape=(128, 128), batch_input_shape=(128, 128))] * 2
        return head.loss_by_feat(*head(feats), gts, metas)


def test_yolox_head_losses_equal_with_our_assigner():
    ours = yolox_head_losses('mmyolo_ext.YOLOXSimOTAAssigner')
    theirs = yolox_head_losses('SimOTAAssigner')
    assert set(ours) == set(theirs)
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key])
    assert float(theirs['loss_bbox'].detach()) > 0
