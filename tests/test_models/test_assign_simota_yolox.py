"""YOLOXSimOTAAssigner against MMDetection's SimOTAAssigner."""
import pytest
import torch
from mmdet.models.task_modules.assigners import \
    SimOTAAssigner as MMDetSimOTAAssigner
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

import mmyolo_ext  # noqa: F401  (registers the modules)
from mmyolo_ext.registry import TASK_UTILS


def mmdet_simota(**kwargs) -> MMDetSimOTAAssigner:
    """MMDetection's assigner, its IoU calculator built in mmdet's scope
    (whatever default scope an earlier test left)."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MMDetSimOTAAssigner(**kwargs)


def centre_priors(size, strides=(8, 16, 32)):
    """YOLOX's offset priors ``[cx, cy, stride, stride]`` of all levels."""
    priors = []
    for stride in strides:
        n = size // stride
        y, x = torch.meshgrid(torch.arange(n), torch.arange(n), indexing='ij')
        xy = torch.stack([x, y], -1).view(-1, 2).float() * stride
        priors.append(
            torch.cat([xy + stride * 0.5,
                       torch.full_like(xy, stride)], 1))
    return torch.cat(priors)


def random_image(gen, priors, num_gts, num_classes, size):
    num_priors = priors.size(0)
    wh = 12 + torch.rand(num_gts, 2, generator=gen) * (size / 2)
    centre = wh / 2 + torch.rand(num_gts, 2, generator=gen) * (size - wh)
    gt = InstanceData(
        bboxes=torch.cat([centre - wh / 2, centre + wh / 2], 1),
        labels=torch.randint(0, num_classes, (num_gts, ), generator=gen))
    box_wh = priors[:, 2:] * torch.exp(
        torch.randn(num_priors, 2, generator=gen) * 0.7 + 1.0)
    box_xy = priors[:, :2] + torch.randn(
        num_priors, 2, generator=gen) * priors[:, 2:]
    scores = (torch.rand(num_priors, num_classes, generator=gen) *
              torch.rand(num_priors, 1, generator=gen)).sqrt()
    pred = InstanceData(
        priors=priors,
        bboxes=torch.cat([box_xy - box_wh / 2, box_xy + box_wh / 2], 1),
        scores=scores)
    return pred, gt


def assert_same_result(ours, theirs):
    assert ours.num_gts == theirs.num_gts
    assert torch.equal(ours.gt_inds, theirs.gt_inds)
    assert torch.equal(ours.labels, theirs.labels)
    torch.testing.assert_close(
        ours.max_overlaps, theirs.max_overlaps, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('seed', range(6))
def test_assign_equals_mmdet_on_random_images(seed):
    gen = torch.Generator().manual_seed(seed)
    size, num_classes = 160, 5
    priors = centre_priors(size)
    ours = TASK_UTILS.build(
        dict(type='mmyolo_ext.YOLOXSimOTAAssigner', center_radius=2.5))
    theirs = mmdet_simota(center_radius=2.5)
    matched = 0
    for num_gts in (1, 3, 12, 30):
        pred, gt = random_image(gen, priors, num_gts, num_classes, size)
        result = ours.assign(pred, gt)
        assert_same_result(result, theirs.assign(pred, gt))
        matched += int((result.gt_inds > 0).sum())
    assert matched > 0


def test_batch_assign_equals_per_image_assign_and_handles_empty_images():
    gen = torch.Generator().manual_seed(7)
    size, num_classes = 160, 4
    priors = centre_priors(size)
    assigner = TASK_UTILS.build(dict(type='mmyolo_ext.YOLOXSimOTAAssigner'))
    theirs = mmdet_simota()
    preds, gts = [], []
    for num_gts in (5, 0, 17, 2):
        pred, gt = random_image(gen, priors, num_gts, num_classes, size)
        preds.append(pred)
        gts.append(gt)
    # a ground truth with no prior inside it or near its centre
    gts[3].bboxes[1] = torch.tensor([-50., -50., -40., -40.])
    results = assigner.batch_assign(preds, gts)
    for pred, gt, result in zip(preds, gts, results):
        assert_same_result(result, theirs.assign(pred, gt))
        assert_same_result(result, assigner.assign(pred, gt))
    assert bool((results[1].gt_inds == 0).all())


def test_only_plain_iou_calculator_is_accepted():
    with pytest.raises(ValueError, match='BboxOverlaps2D'):
        TASK_UTILS.build(
            dict(
                type='mmyolo_ext.YOLOXSimOTAAssigner',
                iou_calculator=dict(type='BboxOverlaps2D', scale=2.)))


def test_chunked_batch_assign_gives_the_same_result():
    gen = torch.Generator().manual_seed(11)
    priors = centre_priors(160)
    preds, gts = zip(*(random_image(gen, priors, n, 4, 160)
                       for n in (9, 3, 14)))
    whole = TASK_UTILS.build(dict(type='mmyolo_ext.YOLOXSimOTAAssigner'))
    chunked = TASK_UTILS.build(
        dict(type='mmyolo_ext.YOLOXSimOTAAssigner', max_pair_bytes=1))
    for a, b in zip(
            whole.batch_assign(list(preds), list(gts)),
            chunked.batch_assign(list(preds), list(gts))):
        assert torch.equal(a.gt_inds, b.gt_inds)
        assert torch.equal(a.max_overlaps, b.max_overlaps)


def test_assign_accepts_box_objects():
    from mmdet.structures.bbox import HorizontalBoxes
    gen = torch.Generator().manual_seed(2)
    pred, gt = random_image(gen, centre_priors(160), 6, 3, 160)
    assigner = TASK_UTILS.build(dict(type='mmyolo_ext.YOLOXSimOTAAssigner'))
    boxed = InstanceData(bboxes=HorizontalBoxes(gt.bboxes), labels=gt.labels)
    assert_same_result(assigner.assign(pred, boxed), assigner.assign(pred, gt))
