"""ComputeLossOTA's ``label_smoothing``: the official ``--label-smoothing``
(``smooth_BCE``: class targets ``1 - eps / 2`` and ``eps / 2``).

The class loss is recomputed by hand from the official vectors' matches and
predictions (a BCE written out with log-sigmoids in float64), so both the
matching and the smoothed targets are checked against the reference.
"""
import pytest
import torch
from helpers.ota_cases import build_loss, case_preds, load_case, reference_rows

AUX_WEIGHT = 0.25  # the official ComputeLossAuxOTA's weight of aux terms


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of sigmoid(logits) against target."""
    logits = logits.double()
    return -(target * torch.nn.functional.logsigmoid(logits) +
             (1 - target) * torch.nn.functional.logsigmoid(-logits)).mean()


def hand_class_loss(case, preds, eps: float) -> float:
    """The official class loss: per level and head, BCE of the matched rows'
    class logits against the smoothed one-hot, summed (aux head weighted),
    times the cls gain and the batch size."""
    nc, nl = case['nc'], len(case['stride'])
    positive, negative = 1.0 - 0.5 * eps, 0.5 * eps
    heads = [(case['matches'], preds[:nl], 1.0)]
    if 'matches_aux' in case:
        heads.append((case['matches_aux'], preds[nl:], AUX_WEIGHT))
    total = 0.0
    for matches, head_preds, weight in heads:
        for level, rows in enumerate(reference_rows(case, matches)):
            cells = list(rows.elements())  # a cell matched twice counts twice
            if not cells:
                continue
            logits = torch.stack([
                head_preds[level][b, a, gj, gi, 5:]
                for b, a, gj, gi, _ in cells
            ])
            target = torch.full(logits.shape, negative, dtype=torch.float64)
            for i, (*_, row) in enumerate(cells):
                target[i, int(case['targets'][row, 1])] = positive
            total += weight * bce(logits, target).item()
    return total * case['hyp']['cls'] * case['bs']


@pytest.mark.parametrize('name', ['ota_p5_nc3.pt', 'auxota_w6_nc80.pt'])
def test_smoothed_class_targets_follow_smooth_bce(name):
    case = load_case(name)
    height, width = case['imgs_shape'][2:]
    preds = case_preds(case)
    plain = build_loss(case)(preds, case['targets'], (height, width))
    # the hand computation reproduces the official class loss at eps = 0
    assert plain['loss_cls'].item() == pytest.approx(
        case['loss_items'][2].item() * case['bs'], rel=1e-5)
    assert hand_class_loss(case, preds, 0.0) == pytest.approx(
        plain['loss_cls'].item(), rel=1e-5)

    eps = 0.1
    smoothed = build_loss(case, label_smoothing=eps)(
        preds, case['targets'], (height, width), return_assignment=True)
    assert smoothed['loss_cls'].item() == pytest.approx(
        hand_class_loss(case, preds, eps), rel=1e-5)
    assert smoothed['loss_cls'].item() != pytest.approx(
        plain['loss_cls'].item(), rel=1e-3)
    # the assignment (its class cost stays one-hot) and the other terms
    # are unchanged
    for key in ('loss_box', 'loss_obj'):
        torch.testing.assert_close(smoothed[key], plain[key], rtol=0, atol=0)
    nl = len(case['stride'])
    ours = [{k: v.tolist() for k, v in level.items()}
            for level in smoothed['assignment']]
    assert len(ours) == nl
    expected = reference_rows(case, case['matches'])
    for level, rows in zip(ours, expected):
        got = list(zip(level['image'], level['anchor'], level['grid_y'],
                       level['grid_x'], level['target']))
        assert sorted(got) == sorted(rows.elements())


def test_label_smoothing_out_of_range_is_refused():
    case = load_case('ota_p5_nc3.pt')
    with pytest.raises(ValueError, match='label_smoothing'):
        build_loss(case, label_smoothing=1.5)
