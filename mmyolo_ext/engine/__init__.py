from . import compat  # noqa: F401  (applies the fixes on import)
from . import hooks, optimizers  # noqa: F401  (registers modules)
from .bad_image_report_hook import BadImageReportHook
from .reparameterize_hook import ReparameterizeHook
from .resumable_train_loop import ResumableEpochBasedTrainLoop

__all__ = [
    'BadImageReportHook', 'ReparameterizeHook', 'ResumableEpochBasedTrainLoop'
]
