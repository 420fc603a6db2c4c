"""The official mixup: a second mosaic blended in."""
import random
from typing import List, Sequence

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.structures.bbox import HorizontalBoxes

from mmyolo_ext.registry import TRANSFORMS


@TRANSFORMS.register_module()
class YOLOv7MixUp(BaseTransform):
    """With probability ``prob``, after a mosaic, blend a second mosaic of a
    random image in: ``img * r + img2 * (1 - r)``, ``r ~ Beta(alpha,
    beta)``, and keep both sets of boxes (the official ``__getitem__``; no
    mixup on a letterboxed sample).

    Args:
        prob (float): The hyp's ``mixup``.
        alpha, beta (float): The Beta distribution (official: 8, 8).
        pre_transform (list[dict]): Makes the second sample from a data
            info: the recipe's ``YOLOv7MosaicPerspective`` with
            ``mosaic=1.0``.
    """

    def __init__(self, prob: float, alpha: float = 8.0, beta: float = 8.0,
                 pre_transform: Sequence[dict] = ()) -> None:
        self.prob = prob
        self.alpha, self.beta = alpha, beta
        self.pre_transform: List = [
            TRANSFORMS.build(t) if isinstance(t, dict) else t
            for t in pre_transform
        ]

    def transform(self, results: dict) -> dict:
        dataset = results.get('dataset')
        if (not results.get('mosaic') or dataset is None
                or random.random() >= self.prob):
            return results
        other = dataset.get_data_info(random.randrange(len(dataset)))
        other['dataset'] = dataset
        for t in self.pre_transform:
            other = t(other)
        r = np.random.beta(self.alpha, self.beta)
        # the official (img * r + img2 * (1 - r)).astype(np.uint8)
        # truncates: -0.5 before cv2's rounding does the same
        results['img'] = cv2.addWeighted(results['img'], r, other['img'],
                                         1 - r, -0.5)
        results['gt_bboxes'] = HorizontalBoxes.cat(
            [results['gt_bboxes'], other['gt_bboxes']])
        for key in ('gt_bboxes_labels', 'gt_ignore_flags'):
            results[key] = np.concatenate([results[key], other[key]])
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(prob={self.prob}, '
                f'alpha={self.alpha}, beta={self.beta})')
