"""The detections of two runs of one model compared box by box."""


def assert_detections_found(reference, other, min_score: float = 0.05) -> int:
    """Each detection of ``reference`` (one image's ``pred_instances``:
    ``bboxes``, ``scores``, ``labels``) scoring above ``min_score`` has one
    in ``other`` with its label, its score within 1e-3 and its box within
    0.05 px. Returns how many were checked."""
    confident = reference['scores'] > min_score
    for box, score, label in zip(reference['bboxes'][confident],
                                 reference['scores'][confident],
                                 reference['labels'][confident]):
        close = ((other['labels'] == label)
                 & ((other['scores'] - score).abs() < 1e-3)
                 & ((other['bboxes'] - box).abs().amax(1) < 0.05))
        assert close.any(), (box, score, label)
    return int(confident.sum())
