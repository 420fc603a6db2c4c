"""MMYOLO's training data preprocessor, applying the HSV gains of the
batch where the model runs."""
from mmyolo.models.data_preprocessors import YOLOv5DetDataPreprocessor

from mmyolo_ext.registry import MODELS
from .batch_hsv import hsv_augment_batch


@MODELS.register_module()
class YOLOv7DataPreprocessor(YOLOv5DetDataPreprocessor):
    """:class:`YOLOv5DetDataPreprocessor` (with ``yolov5_collate``), which
    first applies the per-image HSV gains that ``YOLOv7HSVAug(on_device=
    True)`` drew in the data workers (collated as ``data_samples
    ['hsv_gains']``, ``(N, 3)``) to the uint8 BGR batch, on the model's
    device. Without gains in the batch it is ``YOLOv5DetDataPreprocessor``.
    """

    def forward(self, data: dict, training: bool = False) -> dict:
        samples = data.get('data_samples')
        if training and isinstance(samples, dict) and 'hsv_gains' in samples:
            # the gains stay on the host, where their tables are made: no
            # device-to-host sync
            gains = samples.pop('hsv_gains')
            data = self.cast_data(data)
            data['inputs'] = hsv_augment_batch(data['inputs'], gains)
        return super().forward(data, training)


def _pipelines(dataset_cfg) -> list:
    """The ``pipeline`` lists of a dataset config and its wrapped ones."""
    if isinstance(dataset_cfg, (list, tuple)):
        return [p for d in dataset_cfg for p in _pipelines(d)]
    if not isinstance(dataset_cfg, dict):
        return []
    found = [dataset_cfg['pipeline']] if 'pipeline' in dataset_cfg else []
    for key in ('dataset', 'datasets'):
        found += _pipelines(dataset_cfg.get(key))
    return found


def check_hsv_placement(cfg) -> None:
    """Refuse a training config whose pipeline leaves HSV gains to the data
    preprocessor (``YOLOv7HSVAug`` with ``on_device=True``) when the model
    or the collate would drop them, which would train without HSV."""
    loader = cfg.get('train_dataloader') or {}
    steps = [
        step for pipeline in _pipelines(loader.get('dataset'))
        for step in pipeline if isinstance(step, dict)
        and str(step.get('type', '')).split('.')[-1] == 'YOLOv7HSVAug'
        and step.get('on_device') and any(
            step.get(k, 0) for k in ('hsv_h', 'hsv_s', 'hsv_v'))
    ]
    if not steps:
        return
    preprocessor = str(cfg.model.get('data_preprocessor', {}).get('type'))
    collate = str(loader.get('collate_fn', {}).get('type'))
    if preprocessor.split('.')[-1] != 'YOLOv7DataPreprocessor':
        raise ValueError(
            'the train pipeline has YOLOv7HSVAug(on_device=True), which '
            'leaves the HSV gains to the data preprocessor, but '
            f'model.data_preprocessor is {preprocessor}: set its type to '
            "'YOLOv7DataPreprocessor', or on_device=False to apply HSV in "
            'the data workers')
    if collate.split('.')[-1] != 'yolov5_collate_with_files':
        raise ValueError(
            'the train pipeline has YOLOv7HSVAug(on_device=True), but '
            f"train_dataloader.collate_fn is {collate}, which drops the HSV "
            "gains: use dict(type='yolov5_collate_with_files'), or "
            'on_device=False')
