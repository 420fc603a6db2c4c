"""The image files of each training batch, for messages about the batch."""
from typing import List, Optional

from mmengine.hooks import Hook

from mmyolo_ext.registry import HOOKS
from ..optimizers.nonfinite_step_guard import note_batch_files


def batch_files(data_batch: Optional[dict]) -> List[str]:
    """``img_path`` of every sample of a collated batch: mmdet's list of
    data samples or MMYOLO's packed dict (``img_metas``)."""
    samples = (data_batch or {}).get('data_samples')
    if isinstance(samples, dict):
        metas = samples.get('img_metas') or []
    else:
        metas = [getattr(s, 'metainfo', {}) for s in samples or []]
    return [str(m.get('img_path', '?')) for m in metas]


@HOOKS.register_module()
class BatchFilesHook(Hook):
    """Posts the image files of each training batch before it runs, so that
    a skipped non-finite step names them (:class:`NonFiniteStepGuard`).

    The files come from the samples' ``img_path`` metainfo (the recipes'
    ``PackDetInputs`` keeps it).
    """

    priority = 'VERY_HIGH'

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        note_batch_files(batch_files(data_batch))
