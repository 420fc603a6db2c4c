"""The official ``paste_in`` (utils/datasets.py ``load_samples``,
``sample_segments``, ``pastein``): objects cut out along their polygons from
other images' mosaics and pasted into free places of the sample."""
import logging
import random
from typing import List, Sequence, Tuple

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.logging import print_log

from mmyolo_ext.registry import TRANSFORMS
from .image_source import ImageSource
from .mosaic_layout import mosaic4_center, mosaic4_tiles
from .mosaic_perspective import instance_arrays, place_labels

# pastein's patch sizes (fractions of the image side), tried in this order
PATCH_SCALES = [0.75] * 2 + [0.5] * 4 + [0.25] * 4 + [0.125] * 4 + [0.0625] * 6
MIN_SAMPLES = 30  # __getitem__ draws sample groups until it has this many


def bbox_ioa(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection of ``box`` (4, ) over the area of each of ``boxes``
    (n, 4), xyxy (the official ``bbox_ioa``)."""
    iw = (np.minimum(box[2], boxes[:, 2]) -
          np.maximum(box[0], boxes[:, 0])).clip(0)
    ih = (np.minimum(box[3], boxes[:, 3]) -
          np.maximum(box[1], boxes[:, 1])).clip(0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + 1e-16
    return iw * ih / area


def canvas_crop(images: Sequence[np.ndarray], tiles, box, pad_val=114):
    """The pixels ``box`` (x1, y1, x2, y2; ints) of the official mosaic
    canvas the tiles make, without building the canvas."""
    x1, y1, x2, y2 = box
    crop = np.full((y2 - y1, x2 - x1, 3), pad_val, np.uint8)
    for img, tile in zip(images, tiles):
        vx1, vy1, vx2, vy2 = tile.visible
        ix1, iy1 = max(vx1, x1), max(vy1, y1)
        ix2, iy2 = min(vx2, x2), min(vy2, y2)
        if ix2 <= ix1 or iy2 <= iy1:
            continue
        ox, oy = tile.box_offset
        crop[iy1 - y1:iy2 - y1, ix1 - x1:ix2 - x1] = \
            img[iy1 - oy:iy2 - oy, ix1 - ox:ix2 - ox]
    return crop


def sample_objects(images, tiles, labels: np.ndarray, boxes: np.ndarray,
                   polygons: List[np.ndarray], canvas: int):
    """The official ``sample_segments`` (probability 0.5) on the canvas:
    for round(n / 2) random objects, their class, their box's pixels with
    the outside of the polygon zeroed (zeros inside it made 255, as the
    official mask merge does) and the mask (the same array)."""
    out_labels, out_images, out_masks = [], [], []
    n = len(polygons)
    if not n:
        return out_labels, out_images, out_masks
    for j in random.sample(range(n), k=round(0.5 * n)):
        bx1, by1, bx2, by2 = (
            int(v) for v in np.clip(boxes[j].astype(int), 0, canvas - 1))
        if bx2 <= bx1 or by2 <= by1:
            continue
        # drawn on the part of the canvas holding the whole polygon (or up
        # to the canvas edge): OpenCV fills a polygon cut by the image edge
        # differently from one inside it
        contour = polygons[j].astype(np.int32)
        ax1, ay1 = np.maximum(np.minimum(contour.min(0), (bx1, by1)), 0)
        ax2, ay2 = np.minimum(np.maximum(contour.max(0) + 1, (bx2, by2)),
                              canvas)
        area = np.zeros((ay2 - ay1, ax2 - ax1, 3), np.uint8)
        cv2.drawContours(area, [contour - (ax1, ay1)], -1, (255, 255, 255),
                         cv2.FILLED)
        mask = area[by1 - ay1:by2 - ay1, bx1 - ax1:bx2 - ax1]
        pixels = canvas_crop(images, tiles, (bx1, by1, bx2, by2))
        sample = np.where(mask > 0, np.where(pixels > 0, pixels, 255), 0)
        sample = sample.astype(np.uint8)
        out_labels.append(int(labels[j]))
        out_images.append(sample)
        # the official mask is a view of the array the pixels are then
        # written into: pastein's "mask > 0" after resizing is that of the
        # sample itself (its edge differs from a 0/255 mask's by rounding)
        out_masks.append(sample)
    return out_labels, out_images, out_masks


def paste_objects(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                  samples: Tuple[list, list, list]):
    """The official ``pastein``: for each patch size (skipped with
    probability 0.2) a random place; when it overlaps no box by 30 % of
    that box's area and is over 20 px each way, a random sample resized into
    it and pasted through its mask (if over 60 mask elements). Returns the
    boxes and labels with the pasted objects'."""
    sample_labels, sample_images, sample_masks = samples
    h, w = image.shape[:2]
    new_boxes, new_labels = [], []
    for s in PATCH_SCALES:
        if random.random() < 0.2:
            continue
        mask_h = random.randint(1, int(h * s))
        mask_w = random.randint(1, int(w * s))
        xmin = max(0, random.randint(0, w) - mask_w // 2)
        ymin = max(0, random.randint(0, h) - mask_h // 2)
        xmax, ymax = min(w, xmin + mask_w), min(h, ymin + mask_h)
        box = np.array([xmin, ymin, xmax, ymax], np.float32)
        current = np.concatenate([boxes, np.array(new_boxes).reshape(-1, 4)])
        ioa = bbox_ioa(box, current) if len(current) else np.zeros(1)
        if not ((ioa < 0.30).all() and sample_labels and xmax > xmin + 20
                and ymax > ymin + 20):
            continue
        k = random.randint(0, len(sample_labels) - 1)
        hs, ws = sample_images[k].shape[:2]
        r = min((ymax - ymin) / hs, (xmax - xmin) / ws)
        r_w, r_h = int(ws * r), int(hs * r)
        if r_w <= 10 or r_h <= 10:
            continue
        r_mask = cv2.resize(sample_masks[k], (r_w, r_h))
        r_image = cv2.resize(sample_images[k], (r_w, r_h))
        inside = r_mask > 0
        if inside.sum() > 60:
            region = image[ymin:ymin + r_h, xmin:xmin + r_w]
            region[inside] = r_image[inside]
            new_boxes.append([xmin, ymin, xmin + r_w, ymin + r_h])
            new_labels.append(sample_labels[k])
    return (np.concatenate([boxes, np.array(new_boxes,
                                            np.float32).reshape(-1, 4)]),
            np.concatenate([labels, np.array(new_labels, np.int64)]))


@TRANSFORMS.register_module()
class YOLOv7PasteIn(BaseTransform):
    """The official ``paste_in`` (hyp ``paste_in``; after HSV, before the
    flips): with probability ``prob``, groups of objects are sampled from
    4-image mosaics of random images (``load_samples``: half of each
    group's polygons) until there are 30, then pasted as ``pastein`` does.

    Needs polygons (``instances[i]['mask']``: the COCO datasets' polygons,
    ``YOLODataset``'s polygon rows). A dataset without any is reported once
    in the log and the step does nothing. The mosaic canvas is not built:
    each sampled object's box is cut from the images it covers.

    Args:
        prob (float): The hyp's ``paste_in``.
        img_scale (tuple): (w, h) of the input, square.
        backend_args (dict, optional): File backend arguments.
    """

    def __init__(self, prob: float, img_scale: Tuple[int, int] = (640, 640),
                 backend_args=None) -> None:
        self.prob = prob
        self.img_size = int(img_scale[0])
        self.source = ImageSource(self.img_size, False, backend_args)
        self._has_polygons = None

    def _dataset_has_polygons(self, dataset) -> bool:
        if self._has_polygons is None:
            n = len(dataset)
            probe = random.Random(0).sample(range(n), k=min(n, 200))
            self._has_polygons = any(
                isinstance(i.get('mask'), list) and i['mask']
                for k in probe
                for i in dataset.get_data_info(k).get('instances', ()))
            if not self._has_polygons:
                print_log(
                    'paste_in: the dataset has no polygons (instances[i]'
                    "['mask']), so paste_in is skipped", logger='current',
                    level=logging.WARNING)
        return self._has_polygons

    def resized(self, dataset, info) -> np.ndarray:
        """The official ``load_image`` output of ``info``."""
        src = self.source.load(dataset, info)
        if src.img.shape[1::-1] == tuple(src.size):
            return src.img
        return cv2.resize(src.img, src.size, interpolation=cv2.INTER_LINEAR)

    def load_samples(self, dataset, index: int):
        """The official ``load_samples``: a 4-mosaic around ``index``, half
        of its polygons sampled."""
        s = self.img_size
        center = mosaic4_center(s)
        indices = [index] + random.choices(range(len(dataset)), k=3)
        infos = [dataset.get_data_info(i) for i in indices]
        images = [self.resized(dataset, info) for info in infos]
        tiles = mosaic4_tiles([im.shape[1::-1] for im in images], s, center)
        # the objects with a polygon are the ones sampled (the official
        # segments; a YOLO label file may mix box and polygon rows)
        arrays = [
            instance_arrays(
                dict(info, instances=[
                    i for i in info.get('instances', ()) if i.get('mask')
                ]), True) for info in infos
        ]
        arrays = [a if a[2] is not None else
                  (a[0][:0], a[1][:0], []) for a in arrays]
        boxes, labels, polygons = place_labels(arrays, tiles, 2 * s)
        return sample_objects(images, tiles, labels, boxes, polygons, 2 * s)

    def transform(self, results: dict) -> dict:
        dataset = results.get('dataset')
        if (dataset is None or random.random() >= self.prob
                or not self._dataset_has_polygons(dataset)):
            return results
        samples: Tuple[list, list, list] = ([], [], [])
        while len(samples[0]) < MIN_SAMPLES:
            group = self.load_samples(dataset, random.randrange(len(dataset)))
            for kept, new in zip(samples, group):
                kept += new
            if not samples[0]:
                break
        img = results['img']
        if not img.flags.writeable:
            img = results['img'] = img.copy()
        boxes, labels = paste_objects(img, results['gt_bboxes'].numpy(),
                                      results['gt_bboxes_labels'], samples)
        n_new = len(boxes) - len(results['gt_bboxes'])
        results['gt_bboxes'] = HorizontalBoxes(boxes.astype(np.float32))
        results['gt_bboxes_labels'] = labels
        results['gt_ignore_flags'] = np.concatenate(
            [results['gt_ignore_flags'], np.zeros(n_new, bool)])
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(prob={self.prob})'
