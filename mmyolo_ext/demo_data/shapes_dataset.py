"""The synthetic shapes dataset as an MMYOLO COCO dataset."""
from typing import Optional

from mmyolo_ext.datasets.coco_dataset import YOLOv7CocoDataset
from mmyolo_ext.registry import DATASETS
from .synthetic_shapes import SHAPE_CLASSES, generate_shapes_dataset


@DATASETS.register_module()
class SyntheticShapesDataset(YOLOv7CocoDataset):
    """:class:`YOLOv7CocoDataset` (MMYOLO's COCO dataset with the image
    cache) over the synthetic shapes data, which it
    generates under ``data_root`` the first time it is built.

    The evaluator of a config reads ``<data_root>/annotations/...`` too; the
    runner builds a loop's dataloader before its evaluator, so the files
    exist by then.

    Args:
        generate (dict, optional): Arguments of
            :func:`generate_shapes_dataset` (``num_train``, ``num_val``,
            ``img_size``, ``seed``). Defaults to its defaults.
        **kwargs: The arguments of :class:`YOLOv5CocoDataset`; ``data_root``
            is required.
    """

    METAINFO = dict(
        classes=SHAPE_CLASSES,
        palette=[(220, 20, 60), (0, 160, 80), (30, 60, 230)])

    def __init__(self, *args, generate: Optional[dict] = None,
                 **kwargs) -> None:
        data_root = kwargs.get('data_root')
        if not data_root:
            raise ValueError('SyntheticShapesDataset needs data_root: the '
                             'directory that holds (or will hold) the data')
        generate_shapes_dataset(data_root, **(generate or {}))
        super().__init__(*args, **kwargs)
