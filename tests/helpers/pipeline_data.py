"""Small image sets with boxes (and polygons) for the train pipeline tests:
smooth random images written to files, their data infos as the datasets
give them, and a minimal dataset object the mixing transforms draw from."""
import os
import os.path as osp
from typing import List, Sequence, Tuple

import cv2
import numpy as np


def smooth_image(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A uint8 BGR image of colour gradients (12 x 16 random colours
    upsampled): interpolation differences stay small (PSNR ~55 dB) while a
    1 px misplacement costs ~28 dB."""
    small = rng.integers(0, 256, (12, 16, 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def make_images(folder: str,
                sizes: Sequence[Tuple[int, int]],
                seed: int = 0,
                ext: str = '.png',
                boxes_per_image: int = 6,
                polygons: bool = False) -> Tuple[List[dict], List, List]:
    """Write one image per (w, h) of ``sizes``; return the data infos
    (img_path, width, height, sample_idx, instances with pixel boxes and,
    with ``polygons``, a diamond polygon inside each box), the images and
    the labels as the official code holds them ((n, 5) class cx cy w h,
    normalized)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    infos, images, labels = [], [], []
    for i, (w, h) in enumerate(sizes):
        img = smooth_image(rng, w, h)
        path = osp.join(folder, f'{i:03d}{ext}')
        assert cv2.imwrite(path, img), path
        n = boxes_per_image
        cxcy = rng.uniform(0.15, 0.85, (n, 2))
        wh = rng.uniform(0.02, 0.45, (n, 2))
        x1y1 = np.clip(cxcy - wh / 2, 0, 1)
        x2y2 = np.clip(cxcy + wh / 2, 0, 1)
        cxcy, wh = (x1y1 + x2y2) / 2, x2y2 - x1y1
        cls = rng.integers(0, 3, n)
        lab = np.concatenate([cls[:, None], cxcy, wh], 1)
        instances = []
        for (x1, y1), (x2, y2), c in zip(x1y1 * (w, h), x2y2 * (w, h), cls):
            inst = dict(bbox=[x1, y1, x2, y2], bbox_label=int(c),
                        ignore_flag=0)
            if polygons:
                mx, my = (x1 + x2) / 2, (y1 + y2) / 2
                inst['mask'] = [[mx, y1, x2, my, mx, y2, x1, my]]
            instances.append(inst)
        infos.append(dict(img_path=path, width=w, height=h, sample_idx=i,
                          img_id=i, instances=instances))
        images.append(img)
        labels.append(lab)
    return infos, images, labels


class ListDataset:
    """What the mixing transforms use of a dataset: ``len`` and
    ``get_data_info`` (a fresh copy each time, as mmengine's)."""

    def __init__(self, infos: List[dict], image_cache=None) -> None:
        self.infos = infos
        self.image_cache = image_cache

    def __len__(self) -> int:
        return len(self.infos)

    def get_data_info(self, i: int) -> dict:
        info = dict(self.infos[i])
        info['instances'] = [dict(x) for x in info['instances']]
        return info
