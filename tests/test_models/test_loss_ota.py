"""ComputeLossOTA against the official YOLOv7 loss vectors, and its handling
of bad or degenerate input."""

import pytest
import torch

import mmyolo_ext  # noqa: F401  (registers the modules)
from mmyolo_ext.registry import MODELS
from helpers.ota_cases import (HYP_FILES, P5_ANCHORS, VECTOR_FILES, build_loss, case_preds, load_case, our_rows, reference_rows, run_case)


@pytest.mark.parametrize('name', VECTOR_FILES)
def test_matches_losses_and_gradients_equal_reference(name):
    case = load_case(name)
    height, width = case['imgs_shape'][2:]
    if height != width:
        # The reference converts ground truths to pixels by the image height
        # only; calling with a square input size of that height reproduces
        # it (the input size is used for nothing else).
        width = height
    out, total, grads = run_case(case, (height, width))

    assert our_rows(out['assignment']) == reference_rows(
        case, case['matches'])
    if 'matches_aux' in case:
        assert our_rows(out['assignment_aux']) == reference_rows(
            case, case['matches_aux'])
    else:
        assert 'assignment_aux' not in out

    items = torch.stack(
        [out['loss_box'], out['loss_obj'], out['loss_cls']]).detach()
    torch.testing.assert_close(
        items / case['bs'], case['loss_items'][:3], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(
        total.detach().view(1), case['loss'], rtol=1e-5, atol=0)
    for got, expected in zip(grads, case_preds(case, 'grads_obj',
                                               'grads_sparse')):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-7)


def test_nonsquare_input_scales_each_axis():
    """The reference scales x and w by the image height too; we use the
    width. The two differ exactly in the ground-truth pixel boxes."""
    case = load_case('ota_p5_nonsquare.pt')
    height, width = case['imgs_shape'][2:]
    assert height != width
    out, total, _ = run_case(case, (height, width))
    assert our_rows(out['assignment']) != reference_rows(
        case, case['matches'])
    assert torch.isfinite(total)
    # every match is a candidate of the reference rule (same cells pool)
    candidates = {
        tuple(row)
        for level in case['candidates'] for row in level['index'].tolist()
    }
    for level in out['assignment']:
        for b, a, gj, gi in zip(level['image'].tolist(),
                                level['anchor'].tolist(),
                                level['grid_y'].tolist(),
                                level['grid_x'].tolist()):
            assert (b, a, gj, gi) in candidates


@pytest.mark.parametrize('name', VECTOR_FILES)
def test_hyp_file_gains_scale_to_stored_hyp(name):
    case = load_case(name)
    box, cls, obj = HYP_FILES[case['hyp_name']]
    loss_module = build_loss(
        case,
        box_gain=box,
        cls_gain=cls,
        obj_gain=obj,
        scale_gains=True,
        nominal_img_size=case['imgsz_for_hyp'])
    hyp = case['hyp']
    assert loss_module.box_gain == pytest.approx(hyp['box'], rel=1e-12)
    assert loss_module.cls_gain == pytest.approx(hyp['cls'], rel=1e-12)
    assert loss_module.obj_gain == pytest.approx(hyp['obj'], rel=1e-12)
    assert loss_module.obj_level_weights == case['balance']


def test_chunked_matching_gives_the_same_result():
    case = load_case('ota_p5_nc80_crowd.pt')
    height, width = case['imgs_shape'][2:]
    whole, total, grads = run_case(case, (height, width))
    tiny_budget = dict(type='mmyolo_ext.SimOTAAssigner', max_pair_bytes=1)
    chunked, chunked_total, chunked_grads = run_case(
        case, (height, width), assigner=tiny_budget)
    assert our_rows(chunked['assignment']) == our_rows(whole['assignment'])
    torch.testing.assert_close(chunked_total, total, rtol=0, atol=0)
    for a, b in zip(chunked_grads, grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def p5_loss(num_classes=3, **kwargs):
    return MODELS.build(
        dict(type='ComputeLossOTA', **kwargs),
        default_args=dict(
            num_classes=num_classes, anchors=P5_ANCHORS, strides=[8, 16,
                                                                  32]))


def p5_preds(batch_size=2, size=128, num_classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn((batch_size, 3, size // s, size // s, 5 + num_classes),
                    generator=gen).requires_grad_() for s in (8, 16, 32)
    ]


def test_empty_batch_image_and_unmatchable_target_work_on_cpu():
    loss_module = p5_loss()
    preds = p5_preds(batch_size=3)
    empty = loss_module(preds, torch.zeros(0, 6), (128, 128))
    assert float(empty['loss_box']) == 0 and float(empty['loss_cls']) == 0
    assert float(empty['loss_obj'].detach()) > 0
    # image 1 has no target; the target of image 2 is far too elongated for
    # every anchor (ratio test fails), so image 2 has no candidate at all
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.2, 0.3],
                            [2, 2, 0.5, 0.5, 0.9, 0.01]])
    out = loss_module(preds, targets, (128, 128), return_assignment=True)
    assigned = torch.cat([level['target'] for level in out['assignment']])
    assert assigned.numel() > 0 and bool((assigned == 0).all())
    assert all(
        bool((level['image'] == 0).all()) for level in out['assignment'])
    sum(out[k] for k in ('loss_box', 'loss_obj', 'loss_cls')).backward()
    assert all(torch.isfinite(p.grad).all() for p in preds)


def test_zero_size_boxes_never_give_nan():
    loss_module = p5_loss()
    preds = p5_preds()
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.0, 0.3],
                            [0, 1, 0.3, 0.3, 0.2, 0.0],
                            [1, 2, 0.6, 0.6, 0.0, 0.0],
                            [1, 2, 0.4, 0.6, 0.3, 0.2]])
    out = loss_module(preds, targets, (128, 128))
    total = sum(v for k, v in out.items() if 'loss' in k)
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(p.grad).all() for p in preds)


@pytest.mark.parametrize('row, message', [
    ([1, 3, 0.5, 0.5, 0.2, 0.2], r'row 1 \(image 1\): class id 3'),
    ([1, -1, 0.5, 0.5, 0.2, 0.2], r'row 1 \(image 1\): class id -1'),
    ([1, 1.5, 0.5, 0.5, 0.2, 0.2], r'row 1 \(image 1\): class id 1.5'),
    ([1, 0, float('nan'), 0.5, 0.2, 0.2], r'row 1 \(image 1\): box'),
    ([1, 0, 0.5, 0.5, float('inf'), 0.2], r'row 1 \(image 1\): box'),
    ([2, 0, 0.5, 0.5, 0.2, 0.2], r'row 1 \(image 2\): image index 2'),
    ([1, 0, 0.5, 0.5, -0.1, 0.2], r'row 1 \(image 1\): box .* negative'),
    ([float('nan'), 0, 0.5, 0.5, 0.2, 0.2], r'row 1 \(image nan\): image'),
    ([0, float('-inf'), 0.5, 0.5, 0.2, 0.2], r'row 1 \(image 0\): class id'),
])
def test_bad_targets_raise_naming_image_and_row(row, message):
    loss_module = p5_loss()
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.2, 0.2], row])
    with pytest.raises(ValueError, match=message):
        loss_module(p5_preds(), targets, (128, 128))


def test_bad_prediction_shapes_raise():
    loss_module = p5_loss()
    preds = p5_preds()
    with pytest.raises(ValueError, match='expected 3 prediction tensors'):
        loss_module(preds[:2], torch.zeros(0, 6), (128, 128))
    preds[1] = preds[1][..., :-1]
    with pytest.raises(ValueError, match='prediction 1 has shape'):
        loss_module(preds, torch.zeros(0, 6), (128, 128))


NONFINITE_KEYS = ['nonfinite_box', 'nonfinite_cls', 'nonfinite_obj']


def test_non_finite_loss_term_is_reported_with_term_and_level():
    """A non-finite term does not raise: the loss returns it, and in log
    variables (keys without 'loss': MMEngine's parse_losses leaves them out
    of the total) the non-finite terms per head and level, which the
    optimizer wrapper names when it skips the step."""
    from mmengine.model import BaseModel

    from mmyolo_ext.engine.optimizers.nonfinite_step_guard import \
        nonfinite_terms
    loss_module = p5_loss()
    preds = [p.detach().clone() for p in p5_preds()]
    healthy = loss_module(preds, torch.zeros(0, 6), (128, 128))
    assert sorted(k for k in healthy if 'loss' not in k) == NONFINITE_KEYS
    for key in NONFINITE_KEYS:  # (heads, levels), 0 where finite
        assert torch.equal(healthy[key], torch.zeros(1, 3))
    total, log_vars = BaseModel.parse_losses(None, healthy)
    assert total == healthy['loss_box'] + healthy['loss_obj'] + healthy[
        'loss_cls']
    assert set(NONFINITE_KEYS) <= set(log_vars)  # logged

    preds[2][0, 0, 0, 0, 4] = float('nan')
    out = loss_module(preds, torch.zeros(0, 6), (128, 128))
    assert torch.isnan(out['loss_obj'])
    assert torch.isfinite(out['loss_box']) and torch.isfinite(out['loss_cls'])
    assert not any(out[key].requires_grad for key in NONFINITE_KEYS)
    assert [term for key in NONFINITE_KEYS
            for term in nonfinite_terms(key, out[key])] == [
                'loss_obj (level 2) = nan']


def test_head_builds_its_assigners_from_train_cfg():
    """As mmdet heads: the detector's train_cfg becomes the head's, whose
    assigners (TASK_UTILS, our names in any scope) the loss uses; the old
    place (bbox_head.loss.assigner) and a bbox_head.train_cfg (which mmdet
    would overwrite) are refused naming model.train_cfg."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from helpers.paths import ROOT
    from mmyolo_ext.models.task_modules.assigners import (V7AuxAssigner,
                                                          YOLOv5Assigner)
    cfg = Config.fromfile(
        str(ROOT / 'configs/_base_/models/yolov7_tiny.py')).model
    cfg.train_cfg.assigner = dict(type='YOLOv5Assigner', anchor_t=3.0)
    with DefaultScope.overwrite_default_scope('mmyolo'):
        head = MODELS.build(cfg).bbox_head
    assert head.train_cfg.assigner.type == 'YOLOv5Assigner'
    assert type(head.loss_module.assigner) is YOLOv5Assigner
    assert head.loss_module.assigner.anchor_t == 3.0
    assert type(head.loss_module.aux_assigner) is V7AuxAssigner
    old = cfg.copy()
    old.bbox_head.loss.assigner = dict(type='SimOTAAssigner')
    with pytest.raises(ValueError, match='model.train_cfg.assigner'):
        MODELS.build(old)
    inner = cfg.copy()
    inner.bbox_head.train_cfg = inner.pop('train_cfg')
    with pytest.raises(ValueError, match='assigners in model.train_cfg'):
        MODELS.build(inner)


def test_yolov5_assigner_matches_every_candidate():
    """``assigner=YOLOv5Assigner`` is the reference's non-OTA ComputeLoss:
    its matches are the 3-cell candidates, in the reference's order."""
    case = load_case('ota_p5_nc80.pt')
    height, width = case['imgs_shape'][2:]
    out, total, _ = run_case(
        case, (height, width), assigner=dict(type='YOLOv5Assigner'))
    for level, cands in zip(out['assignment'], case['candidates']):
        ours = torch.stack([
            level['image'], level['anchor'], level['grid_y'],
            level['grid_x']
        ], 1)
        assert torch.equal(ours, cands['index'])
    assert torch.isfinite(total)


def _peak_extra_mb_in_child(fn):
    """Peak RSS increase (MB) of ``fn()`` in a forked child process."""
    import multiprocessing
    import resource
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()

    def child():
        torch.set_num_threads(1)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        queue.put(
            (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) /
            1024)

    proc = ctx.Process(target=child)
    proc.start()
    proc.join(300)
    assert proc.exitcode == 0, f'child failed (exit code {proc.exitcode})'
    return queue.get()


def test_crowded_batch_stays_within_memory_bound():
    """2 images at 640 with 2,000 ground truths each run in < 2 GB of extra
    peak memory (the reference's per-image (GT x candidate x class) tensors
    alone would take several GB; the matching here is chunked)."""
    gen = torch.Generator().manual_seed(3)
    num_classes, per_image = 80, 2000
    preds = p5_preds(batch_size=2, size=640, num_classes=num_classes)
    preds = [p.detach() for p in preds]
    wh = 0.02 + torch.rand(2 * per_image, 2, generator=gen) * 0.3
    xy = wh / 2 + torch.rand(2 * per_image, 2, generator=gen) * (1 - wh)
    targets = torch.cat([
        torch.arange(2).repeat_interleave(per_image)[:, None].float(),
        torch.randint(0, num_classes, (2 * per_image, 1),
                      generator=gen).float(), xy, wh
    ], 1)
    loss_module = p5_loss(num_classes=num_classes)

    def call():
        with torch.no_grad():
            out = loss_module(preds, targets, (640, 640))
        assert all(torch.isfinite(v).all() for v in out.values())

    assert _peak_extra_mb_in_child(call) < 2048



def test_assigners_are_ours_under_any_default_scope():
    from mmengine.registry import DefaultScope

    from mmyolo_ext.models.task_modules.assigners import SimOTAAssigner
    for scope in ('mmdet', 'mmyolo', 'mmyolo_ext'):
        with DefaultScope.overwrite_default_scope(scope):
            loss_module = p5_loss()
        assert isinstance(loss_module.assigner, SimOTAAssigner)


def test_rows_and_objectness_gradient_equals_autograd_and_keeps_layout():
    from mmyolo_ext.models.losses import rows_and_objectness
    from mmyolo_ext.models.task_modules.assigners import GridCells
    gen = torch.Generator().manual_seed(5)
    raws = [
        torch.randn(2, 3 * 8, 4, 5, generator=gen, dtype=torch.float64),
        torch.randn(2, 3 * 8, 2, 3, generator=gen, dtype=torch.float64)
    ]
    cells = GridCells(
        image=torch.tensor([0, 1, 1, 1, 1]),
        anchor=torch.tensor([2, 0, 0, 1, 2]),
        grid_y=torch.tensor([3, 1, 1, 0, 1]),  # a repeated cell
        grid_x=torch.tensor([4, 2, 2, 0, 2]),
        target=torch.zeros(5, dtype=torch.long),
        level=torch.tensor([0, 0, 0, 0, 1]))
    weights = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    level_weights = torch.tensor([3., 0.5], dtype=torch.float64)

    def loss(fn, raws):
        preds = [r.view(2, 3, 8, *r.shape[2:]).permute(0, 1, 3, 4, 2)
                 for r in raws]
        rows, obj = fn(preds)
        return (rows * weights).sum() + (obj * level_weights).sum()

    def reference(preds):
        rows = [preds[0][cells.image[:4], cells.anchor[:4],
                         cells.grid_y[:4], cells.grid_x[:4]],
                preds[1][cells.image[4:], cells.anchor[4:],
                         cells.grid_y[4:], cells.grid_x[4:]]]
        obj = [torch.nn.functional.softplus(p[..., 4]).mean() for p in preds]
        return torch.cat(rows), torch.stack(obj)

    ours_raws = [r.clone().requires_grad_() for r in raws]
    ours_loss = loss(lambda p: rows_and_objectness(p, cells), ours_raws)
    ours_loss.backward()
    ref_raws = [r.clone().requires_grad_() for r in raws]
    ref_loss = loss(reference, ref_raws)
    ref_loss.backward()
    torch.testing.assert_close(ours_loss, ref_loss)
    for ours_raw, ref_raw in zip(ours_raws, ref_raws):
        torch.testing.assert_close(ours_raw.grad, ref_raw.grad)
        assert ours_raw.grad.is_contiguous()


def test_assigners_alone_reproduce_the_aux_case_assignments():
    """``assign_grid`` of the assigners, called directly on the lead
    predictions (as the reference's ComputeLossAuxOTA does for both heads),
    gives the reference's lead and auxiliary matches."""
    from mmyolo_ext.registry import TASK_UTILS
    case = load_case('auxota_w6_nc80.pt')
    num_levels = len(case['stride'])
    lead = case_preds(case)[:num_levels]
    anchors = torch.tensor(case['anchors_grid'])
    hw = tuple(case['imgs_shape'][2:])
    for cfg, key in (
        (dict(type='mmyolo_ext.SimOTAAssigner', topk=20), 'matches'),
        (dict(type='mmyolo_ext.V7AuxAssigner'), 'matches_aux')):
        cells = TASK_UTILS.build(cfg).assign_grid(lead, case['targets'],
                                                  anchors, case['stride'], hw)
        assert our_rows(cells.split_levels(num_levels)) == reference_rows(
            case, case[key])
