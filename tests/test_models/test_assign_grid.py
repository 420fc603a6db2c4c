"""Grid candidate rule and batched dynamic-k matching of the YOLO
assigners."""

import pytest
import torch

import mmyolo_ext  # noqa: F401  (registers the modules)
from mmyolo_ext.models.task_modules.assigners import (
    dynamic_k_matching, dynamic_k_matching_reference, grid_candidates)
from mmyolo_ext.registry import TASK_UTILS

from helpers.paths import TEST_DATA as DATA


def load_case(name):
    return torch.load(DATA / name, weights_only=True)


def anchors_grid(case):
    strides = torch.tensor(case['stride'], dtype=torch.float32)
    return torch.tensor(case['anchors_px']) / strides.view(-1, 1, 1)


@pytest.mark.parametrize('name, key, bias', [
    ('ota_p5_nc80.pt', 'candidates', 0.5),
    ('ota_p5_nc80_crowd.pt', 'candidates', 0.5),
    ('ota_p5_nonsquare.pt', 'candidates', 0.5),
    ('ota_tiny_nc80.pt', 'candidates', 0.5),
    ('auxota_w6_nc80.pt', 'candidates', 0.5),
    ('auxota_w6_nc80.pt', 'candidates_aux', 1.0),
])
def test_candidates_equal_reference_in_order(name, key, bias):
    case = load_case(name)
    anchors = anchors_grid(case)
    torch.testing.assert_close(
        anchors, torch.tensor(case['anchors_grid']), rtol=0, atol=0)
    num_levels = len(case['stride'])
    grid_sizes = [tuple(s[2:4]) for s in case['pred_shapes'][:num_levels]]
    cells = grid_candidates(case['targets'], grid_sizes, anchors, 4.0,
                            bias).split_levels(num_levels)
    for level, (cells_l, ref) in enumerate(zip(cells, case[key])):
        ours = torch.stack([
            cells_l['image'], cells_l['anchor'], cells_l['grid_y'],
            cells_l['grid_x']
        ], 1)
        assert torch.equal(ours, ref['index'])
        torch.testing.assert_close(
            anchors[level][cells_l['anchor']],
            ref['anchors'],
            rtol=0,
            atol=0)


def test_assigners_are_configurations_of_one_core():
    simota = TASK_UTILS.build(dict(type='SimOTAAssigner'))
    aux = TASK_UTILS.build(dict(type='V7AuxAssigner'))
    yolov5 = TASK_UTILS.build(dict(type='YOLOv5Assigner'))
    assert (simota.neighbour_bias, simota.topk) == (0.5, 10)
    assert (aux.neighbour_bias, aux.topk) == (1.0, 20)
    assert (yolov5.neighbour_bias, yolov5.topk) == (0.5, None)
    assert type(simota).assign_grid is type(aux).assign_grid
    assert type(simota).assign_grid is type(yolov5).assign_grid


def brute_force_matching(gt_boxes, gt_labels, gt_image, cand_boxes,
                         cand_image, base, delta, topk):
    """Per image, per ground truth loops (the reference's structure)."""
    from mmyolo_ext.models.task_modules.assigners.dynamic_k_matching \
        import box_iou_xyxy
    matched = torch.full((cand_boxes.size(0), ), -1)
    for image in gt_image.unique().tolist():
        gts = torch.nonzero(gt_image == image)[:, 0]
        cands = torch.nonzero(cand_image == image)[:, 0]
        if cands.numel() == 0:
            continue
        iou = box_iou_xyxy(gt_boxes[gts, None], cand_boxes[None, cands])
        ks = torch.topk(iou, min(topk, cands.numel()),
                        dim=1).values.sum(1).int().clamp(min=1)
        cost = (base[cands][None] + delta[cands][:, gt_labels[gts]].T -
                3.0 * torch.log(iou + 1e-8))
        taken = torch.zeros_like(cost, dtype=torch.bool)
        for g in range(gts.numel()):
            # stable ascending sort: equal costs, lower column first
            order = torch.sort(cost[g], stable=True).indices
            taken[g, order[:int(ks[g])]] = True
        contested = taken.sum(0) > 1
        taken[:, contested] = False
        taken[cost[:, contested].argmin(0), contested] = True
        cols = torch.nonzero(taken.any(0))[:, 0]
        matched[cands[cols]] = gts[taken[:, cols].float().argmax(0)]
    return matched


@pytest.mark.parametrize('seed', range(4))
def test_batched_matching_equals_per_image_loops(seed):
    gen = torch.Generator().manual_seed(seed)
    num_images, num_classes = 3, 4
    num_gts, num_cands = 17, 90
    gt_image = torch.randint(0, num_images, (num_gts, ), generator=gen)
    cand_image = torch.randint(0, num_images, (num_cands, ), generator=gen)
    xy = torch.rand(num_gts, 2, generator=gen) * 60
    gt_boxes = torch.cat([xy, xy + 5 + torch.rand(num_gts, 2, generator=gen)
                          * 30], 1)
    # candidates jitter around the ground truths; some are exact copies
    # (equal columns, as repeated cells of the reference)
    src = torch.randint(0, num_gts, (num_cands, ), generator=gen)
    cand_boxes = gt_boxes[src] + torch.randn(num_cands, 4, generator=gen) * 4
    cand_boxes[1::7] = cand_boxes[0::7][:cand_boxes[1::7].size(0)]
    cand_image[1::7] = cand_image[0::7][:cand_image[1::7].size(0)]
    logits = torch.randn(num_cands, num_classes, generator=gen)
    logits[1::7] = logits[0::7][:logits[1::7].size(0)]
    base = torch.nn.functional.softplus(logits).sum(1)
    labels = torch.randint(0, num_classes, (num_gts, ), generator=gen)
    expected = brute_force_matching(gt_boxes, labels, gt_image, cand_boxes,
                                    cand_image, base, -logits, topk=10)
    for budget in (1, 2**30):
        matched = dynamic_k_matching(
            gt_boxes,
            labels,
            gt_image,
            cand_boxes,
            cand_image,
            base,
            lambda index, label: -logits[index, label],
            num_images,
            topk=10,
            max_pair_bytes=budget)
        assert torch.equal(matched, expected)
    reference = dynamic_k_matching_reference(
        gt_boxes, labels, gt_image, cand_boxes, cand_image, base,
        lambda index, label: -logits[index, label], num_images, topk=10)
    assert torch.equal(reference, expected)


def random_matching_case(seed, num_images=4, num_gts=40, num_cands=400,
                         num_classes=6):
    """Ground truths and candidates (jittered copies of them, some exact
    repeats, some images without ground truths or candidates)."""
    gen = torch.Generator().manual_seed(seed)
    gt_image = torch.randint(0, num_images - 1, (num_gts, ), generator=gen)
    cand_image = torch.randint(1, num_images, (num_cands, ), generator=gen)
    xy = torch.rand(num_gts, 2, generator=gen) * 200
    gt_boxes = torch.cat(
        [xy, xy + 2 + torch.rand(num_gts, 2, generator=gen) * 80], 1)
    src = torch.randint(0, num_gts, (num_cands, ), generator=gen)
    cand_boxes = gt_boxes[src] + torch.randn(num_cands, 4, generator=gen) * 6
    repeat = torch.randint(0, num_cands, (num_cands // 5, ), generator=gen)
    cand_boxes[:num_cands // 5] = cand_boxes[repeat]
    cand_image[:num_cands // 5] = cand_image[repeat]
    logits = torch.randn(num_cands, num_classes, generator=gen) * 3
    logits[:num_cands // 5] = logits[repeat]
    labels = torch.randint(0, num_classes, (num_gts, ), generator=gen)
    base = torch.nn.functional.softplus(logits).sum(1)
    return (gt_boxes, labels, gt_image, cand_boxes, cand_image, base,
            lambda index, label: -logits[index, label], num_images)


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('topk', [1, 10, 20])
def test_batched_matching_equals_plain_reference(seed, topk):
    """The fast batched matching and the plain per-image one give the same
    owner for every candidate, with a YOLOX-like pair penalty too."""
    case = random_matching_case(seed)
    cand_boxes = case[3]

    def penalty(boxes, cand_index):
        # candidates whose centre lies outside the box cost more
        centre = (cand_boxes[cand_index.clamp(min=0)][..., :2] +
                  cand_boxes[cand_index.clamp(min=0)][..., 2:]) / 2
        inside = ((centre > boxes[:, None, :2]) &
                  (centre < boxes[:, None, 2:])).all(-1)
        return (~inside).float() * 1e5

    for extra in (dict(), dict(pair_penalty=penalty, iou_eps=1e-7,
                               union_eps=1e-6)):
        expected = dynamic_k_matching_reference(*case, topk=topk, **extra)
        assert (expected >= 0).any() and (expected < 0).any()
        assert expected[case[4] == case[7] - 1].ge(0).sum() == 0
        for budget in (1, 2**30):
            fast = dynamic_k_matching(
                *case, topk=topk, max_pair_bytes=budget, **extra)
            assert torch.equal(fast, expected)


@pytest.mark.parametrize('name', [
    'ota_p5_nc80.pt', 'ota_p5_nc80_crowd.pt', 'ota_p5_nc1.pt',
    'ota_p5_nc3.pt', 'ota_p5_nonsquare.pt', 'ota_tiny_nc80.pt',
    'auxota_w6_nc80.pt'
])
def test_reference_matching_reproduces_official_vectors(name, monkeypatch):
    """The assigners give the same cells with the plain reference matching
    as with the batched one, and (square inputs) the official matches, lead
    and auxiliary. On the non-square case we scale x by the width where the
    reference uses the height (a documented deviation)."""
    from helpers.ota_cases import case_preds, our_rows, reference_rows

    from mmyolo_ext.models.task_modules.assigners import ota_core
    case = load_case(name)
    num_levels = len(case['stride'])
    lead = case_preds(case)[:num_levels]
    hw = tuple(case['imgs_shape'][2:])
    with_aux = 'matches_aux' in case
    configs = [(dict(type='mmyolo_ext.SimOTAAssigner',
                     topk=20 if with_aux else 10), 'matches')]
    if with_aux:
        configs.append((dict(type='mmyolo_ext.V7AuxAssigner'), 'matches_aux'))
    for cfg, key in configs:
        assigner = TASK_UTILS.build(cfg)
        args = (lead, case['targets'], anchors_grid(case), case['stride'], hw)
        fast = assigner.assign_grid(*args)
        with monkeypatch.context() as patch:
            patch.setattr(ota_core, 'dynamic_k_matching',
                          dynamic_k_matching_reference)
            plain = assigner.assign_grid(*args)
        assert all(torch.equal(a, b)
                   for a, b in zip(fast.fields(), plain.fields()))
        if hw[0] == hw[1]:
            assert our_rows(plain.split_levels(num_levels)) == (
                reference_rows(case, case[key]))
