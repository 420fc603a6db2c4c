from .atomic_checkpoint_hook import AtomicCheckpointHook
from .autoanchor_hook import AutoAnchorHook
from .batch_files_hook import BatchFilesHook
from .curve_plot_hook import CurvePlotHook
from .optim_step_ema_hook import OptimStepEMAHook
from .yolov7_param_scheduler_hook import YOLOv7ParamSchedulerHook

__all__ = [
    'AtomicCheckpointHook', 'AutoAnchorHook', 'BatchFilesHook',
    'CurvePlotHook', 'OptimStepEMAHook', 'YOLOv7ParamSchedulerHook'
]
