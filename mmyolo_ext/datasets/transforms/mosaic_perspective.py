"""The official training sample's geometry in one transform: mosaic (4 or
9 images) or letterbox, then random_perspective, each image warped once
straight into the output."""
import math
import random
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.structures.bbox import HorizontalBoxes

from mmyolo_ext.registry import TRANSFORMS
from .image_source import ImageSource, SourceImage, resized_size
from .mosaic_layout import (Tile, letterbox_tile, mosaic4_center,
                            mosaic4_tiles, mosaic9_offset, mosaic9_tiles)
from .perspective import (PerspectiveParams, perspective_matrix,
                          sample_perspective, warp_labels)


def instance_arrays(info: dict, with_polygons: bool):
    """Normalized xyxy boxes (n, 4), labels (n, ) and, when every instance
    has a polygon and ``with_polygons``, the normalized polygons ((k, 2)
    each; an object of several parts as one point list) of a data info's
    instances that are not ignored (crowd)."""
    instances = [i for i in info.get('instances', ())
                 if not i.get('ignore_flag', 0)]
    w0, h0 = info['width'], info['height']
    boxes = np.array([i['bbox'] for i in instances],
                     np.float64).reshape(-1, 4)
    boxes /= (w0, h0, w0, h0)
    labels = np.array([i['bbox_label'] for i in instances], np.int64)
    polygons = None
    if with_polygons and instances and all(
            isinstance(i.get('mask'), list) and i['mask']
            for i in instances):
        polygons = [
            np.concatenate([np.asarray(part, np.float64).reshape(-1, 2)
                            for part in i['mask']]) / (w0, h0)
            for i in instances
        ]
    return boxes, labels, polygons


def source_matrix(src: SourceImage, crop_origin: Tuple[int, int]) -> \
        np.ndarray:
    """3x3: pixel centres of the crop of ``src.img`` at ``crop_origin`` to
    those of the official resized image."""
    (kx, ky), (x0, y0) = src.scale, crop_origin
    return np.array([[kx, 0, kx * (x0 + 0.5) - 0.5],
                     [0, ky, ky * (y0 + 0.5) - 0.5], [0, 0, 1.]])


def _source_crop(src: SourceImage, tile: Tile, x1: float, y1: float,
                 x2: float, y2: float) -> Tuple[int, int, int, int]:
    """The source pixels (x1, y1, x2, y2; end exclusive) behind the canvas
    pixel centres from (x1, y1) to (x2, y2), one more each side for the
    bilinear neighbours, within the image."""
    to_source = np.linalg.inv(tile.pixel_matrix @ source_matrix(src, (0, 0)))
    (u1, v1), (u2, v2) = (to_source[:2, :2] @ [x, y] + to_source[:2, 2]
                          for x, y in ((x1, y1), (x2, y2)))
    h, w = src.img.shape[:2]
    return (max(math.floor(u1) - 1, 0), max(math.floor(v1) - 1, 0),
            min(math.floor(u2) + 2, w), min(math.floor(v2) + 2, h))


def is_axis_aligned(M: np.ndarray) -> bool:
    """Scale and translation only (every official hyp: no rotation, shear
    or perspective)."""
    return not (M[0, 1] or M[1, 0] or M[2, 0] or M[2, 1])


def output_rect(tile: Tile, M: np.ndarray,
                out_size: int) -> Tuple[int, int, int, int]:
    """For an axis-aligned ``M``: the output pixels whose canvas point is
    nearest to one of the tile's canvas pixels (the tiles' rectangles then
    split the output without gap or overlap)."""
    x1, y1, x2, y2 = tile.visible
    sx, tx, sy, ty = M[0, 0], M[0, 2], M[1, 1], M[1, 2]
    ox1, ox2 = (math.ceil(sx * (x - 0.5) + tx) for x in (x1, x2))
    oy1, oy2 = (math.ceil(sy * (y - 0.5) + ty) for y in (y1, y2))
    return (min(max(ox1, 0), out_size), min(max(oy1, 0), out_size),
            min(max(ox2, 0), out_size), min(max(oy2, 0), out_size))


def tile_is_visible(tile: Tile, M: np.ndarray, out_size: int) -> bool:
    """Whether any of the tile's canvas pixels lands in the output (else
    its image need not be read: its boxes all fall outside too)."""
    x1, y1, x2, y2 = tile.visible
    if x2 <= x1 or y2 <= y1:
        return False
    if is_axis_aligned(M):
        ox1, oy1, ox2, oy2 = output_rect(tile, M, out_size)
        return ox2 > ox1 and oy2 > oy1
    corners = np.array([[x1 - 0.5, y1 - 0.5, 1], [x2 - 0.5, y1 - 0.5, 1],
                        [x1 - 0.5, y2 - 0.5, 1], [x2 - 0.5, y2 - 0.5, 1]])
    xyw = corners @ M.T
    if (xyw[:, 2] <= 0).any():
        return True
    xy = xyw[:, :2] / xyw[:, 2:]
    return bool((xy.max(0) > 0).all() and (xy.min(0) < out_size).all())


def warp_tile(out: np.ndarray,
              src: SourceImage,
              tile: Tile,
              M: np.ndarray,
              pad: Tuple[int, int, int] = (114, 114, 114)) -> None:
    """Draw the canvas pixels ``tile.visible`` of ``src`` through the canvas
    to output matrix ``M`` into ``out``.

    Axis-aligned ``M`` (the official hyps): the source is warped into the
    output rectangle of the tile (:func:`output_rect`), reading a crop one
    pixel larger than what it shows (past the image's own edge the grey
    fill, as on the official canvas). Otherwise the crop of the visible part is warped into the
    rectangle it covers with BORDER_TRANSPARENT (pixels outside the crop
    keep what ``out`` holds; 2.5x slower in OpenCV, so only here)."""
    x1, y1, x2, y2 = tile.visible
    if x2 <= x1 or y2 <= y1:
        return
    oh, ow = out.shape[:2]
    if is_axis_aligned(M):
        ox1, oy1, ox2, oy2 = output_rect(tile, M, ow)
        if ox2 <= ox1 or oy2 <= oy1:
            return
        # the canvas points of the first and last output pixel centres
        qx1, qx2 = ((x - M[0, 2]) / M[0, 0] for x in (ox1, ox2 - 1))
        qy1, qy2 = ((y - M[1, 2]) / M[1, 1] for y in (oy1, oy2 - 1))
        cx1, cy1, cx2, cy2 = _source_crop(src, tile, qx1, qy1, qx2, qy2)
        border = cv2.BORDER_CONSTANT
    else:
        ox1, oy1, ox2, oy2 = 0, 0, ow, oh
        cx1, cy1, cx2, cy2 = _source_crop(src, tile, x1, y1, x2 - 1, y2 - 1)
        border = cv2.BORDER_TRANSPARENT
    if cx2 <= cx1 or cy2 <= cy1:
        return
    crop = src.img[cy1:cy2, cx1:cx2]
    H = M @ tile.pixel_matrix @ source_matrix(src, (cx1, cy1))
    projective = bool(H[2, 0] or H[2, 1])
    if border == cv2.BORDER_TRANSPARENT:
        # only the output rectangle the crop covers
        corners = np.array([[-0.5, -0.5], [cx2 - cx1 - 0.5, -0.5],
                            [-0.5, cy2 - cy1 - 0.5],
                            [cx2 - cx1 - 0.5, cy2 - cy1 - 0.5]])
        xyw = corners @ H[:, :2].T + H[:, 2]
        if not (projective and (xyw[:, 2] <= 0).any()):
            xy = xyw[:, :2] / xyw[:, 2:]
            ox1, oy1 = (max(int(math.floor(v)), 0) for v in xy.min(0))
            ox2 = min(int(math.ceil(xy[:, 0].max())) + 1, ow)
            oy2 = min(int(math.ceil(xy[:, 1].max())) + 1, oh)
        if ox2 <= ox1 or oy2 <= oy1:
            return
    roi = out[oy1:oy2, ox1:ox2]
    H = np.array([[1, 0, -ox1], [0, 1, -oy1], [0, 0, 1.]]) @ H
    if (not projective and H[0, 0] == 1 and H[1, 1] == 1 and not H[0, 1]
            and not H[1, 0] and H[0, 2] == int(H[0, 2])
            and H[1, 2] == int(H[1, 2])):
        # a whole-pixel shift: a copy, no interpolation
        tx, ty = int(H[0, 2]), int(H[1, 2])
        sx1, sy1 = max(-tx, 0), max(-ty, 0)
        sx2 = min(crop.shape[1], roi.shape[1] - tx)
        sy2 = min(crop.shape[0], roi.shape[0] - ty)
        if sx2 > sx1 and sy2 > sy1:
            roi[sy1 + ty:sy2 + ty, sx1 + tx:sx2 + tx] = crop[sy1:sy2, sx1:sx2]
        return
    size = (ox2 - ox1, oy2 - oy1)
    if projective:
        cv2.warpPerspective(crop, H, size, dst=roi, flags=cv2.INTER_LINEAR,
                            borderMode=border, borderValue=pad)
    else:
        cv2.warpAffine(crop, H[:2], size, dst=roi, flags=cv2.INTER_LINEAR,
                       borderMode=border, borderValue=pad)


def place_labels(arrays: Sequence[tuple], tiles: Sequence[Tile],
                 clip: Optional[float]):
    """Canvas-pixel boxes, labels and polygons (None unless every image has
    them) of the tiles' images, clipped to ``[0, clip]`` as the official
    mosaics clip them."""
    boxes, labels, polygons = [], [], []
    use_polygons = all(a[2] is not None or not len(a[0]) for a in arrays)
    for (b, lab, polys), tile in zip(arrays, tiles):
        scale = np.array(tile.box_scale * 2)
        offset = np.array(tile.box_offset * 2)
        boxes.append(b * scale + offset)
        labels.append(lab)
        if use_polygons and polys is not None:
            polygons += [p * tile.box_scale + tile.box_offset for p in polys]
    boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    if clip is not None:
        np.clip(boxes, 0, clip, out=boxes)
        for p in polygons:
            np.clip(p, 0, clip, out=p)
    return boxes, labels, (polygons if use_polygons else [])


@TRANSFORMS.register_module()
class YOLOv7MosaicPerspective(BaseTransform):
    """The official sample geometry (``LoadImagesAndLabels.__getitem__``):
    with probability ``mosaic`` a 4-image mosaic (9 images with probability
    ``mosaic9``), else the image letterboxed to ``img_scale``; then
    ``random_perspective`` with the hyp's ``degrees``, ``translate``,
    ``scale`` (s ~ U(1 - scale, 1.1 + scale)), ``shear`` and
    ``perspective``, and the official ``box_candidates`` rule.

    Unlike the official code (and MMYOLO's ``Mosaic`` + ``YOLOv5RandomAffine``)
    it builds no ``2s x 2s`` canvas: each image is warped once, straight
    into the output, through its placement composed with the perspective
    matrix, and JPEGs that will shrink are decoded at 1/2-1/8 scale (see
    :mod:`.image_source`). ``tests/test_datasets`` checks the result against
    the official "mosaic, then warp" written out. The boxes come from the
    warped polygons when every instance has one (COCO with its
    segmentations; area threshold 0.01), as the official code does.

    Loads the images itself (the first one from ``results``' data info, the
    others drawn from ``results['dataset']``, which MMYOLO's datasets add in
    training), from the dataset's image cache when it has one
    (``cache_images``). Without a dataset (a plain test) only the letterbox
    branch runs.

    Args:
        img_scale (tuple): (w, h) of the output, square. Defaults to
            (640, 640).
        mosaic (float): Probability of a mosaic. Defaults to 1.0.
        mosaic9 (float): Probability that a mosaic has 9 images (the
            official code's 0.2). Defaults to 0.2.
        degrees, translate, scale, shear, perspective (float): The hyp's
            random_perspective ranges.
        pad_val (int): Fill value. Defaults to 114.
        with_polygons (bool): Take the boxes from the polygons when there
            are. Defaults to True.
        reduce_decode (bool): DCT-scaled JPEG decoding. Defaults to True.
        backend_args (dict, optional): File backend arguments.
    """

    def __init__(self,
                 img_scale: Tuple[int, int] = (640, 640),
                 mosaic: float = 1.0,
                 mosaic9: float = 0.2,
                 degrees: float = 0.0,
                 translate: float = 0.2,
                 scale: float = 0.5,
                 shear: float = 0.0,
                 perspective: float = 0.0,
                 pad_val: int = 114,
                 with_polygons: bool = True,
                 reduce_decode: bool = True,
                 backend_args: Optional[dict] = None) -> None:
        img_scale = tuple(img_scale)
        if len(img_scale) != 2 or img_scale[0] != img_scale[1]:
            raise ValueError(f'YOLOv7MosaicPerspective: img_scale={img_scale}'
                             ' must be square (the official img_size)')
        self.img_scale = img_scale
        self.img_size = int(img_scale[0])
        self.mosaic = mosaic
        self.mosaic9 = mosaic9
        self.ranges = dict(degrees=degrees, translate=translate, scale=scale,
                           shear=shear, perspective=perspective)
        self.pad_val = pad_val
        self.with_polygons = with_polygons
        self.source = ImageSource(self.img_size, reduce_decode, backend_args)

    # the image cache asks the pipeline which size to cache
    @property
    def cache_size(self) -> int:
        return self.img_size

    def transform(self, results: dict) -> dict:
        dataset = results.get('dataset')
        use_mosaic = dataset is not None and random.random() < self.mosaic
        return self.sample(results, dataset, use_mosaic)

    def sample(self,
               results: dict,
               dataset,
               use_mosaic: bool,
               params: Optional[PerspectiveParams] = None,
               partners: Optional[List[int]] = None,
               nine: Optional[bool] = None,
               center: Optional[Tuple[int, int]] = None) -> dict:
        """One sample; the random choices may be given (tests, mixup)."""
        s = self.img_size
        p = params or sample_perspective(**self.ranges)
        if use_mosaic:
            if nine is None:
                nine = random.random() < self.mosaic9
            if partners is None:
                partners = random.choices(range(len(dataset)),
                                          k=8 if nine else 3)
            infos = [results] + [dataset.get_data_info(i) for i in partners]
            canvas = 2 * s
        else:
            infos, canvas = [results], s
        if not use_mosaic:
            layout = lambda sizes: [letterbox_tile(sizes[0], s)]  # noqa
        elif nine:
            offset = center or mosaic9_offset(s)
            layout = lambda sizes: mosaic9_tiles(sizes, s, offset)  # noqa
        else:
            offset = center or mosaic4_center(s)
            layout = lambda sizes: mosaic4_tiles(sizes, s, offset)  # noqa
        M = perspective_matrix(p, (canvas, canvas), (s, s))
        # the layout from the recorded sizes: an image that lands outside
        # the output is not read (its boxes all fall outside too)
        tiles = layout([resized_size(i['width'], i['height'], s)
                        for i in infos])
        # a resized image's pixel becomes p.scale output pixels
        sources = [
            self.source.load(dataset, info, p.scale)
            if tile_is_visible(tile, M, s) else None
            for info, tile in zip(infos, tiles)
        ]
        if any(src is not None and (src.info is not info or tuple(
                src.size) != tuple(resized_size(info['width'],
                                                info['height'], s)))
               for src, info in zip(sources, infos)):
            # a substitute for a bad image, or a file whose size is not the
            # recorded one: every image read, the layout from their sizes
            sources = [src or self.source.load(dataset, info, p.scale)
                       for src, info in zip(sources, infos)]
            infos = [src.info for src in sources]
            tiles = layout([src.size for src in sources])
        out = np.full((s, s, 3), self.pad_val, np.uint8)
        for src, tile in zip(sources, tiles):
            if src is not None:
                warp_tile(out, src, tile, M, (self.pad_val, ) * 3)
        arrays = [
            instance_arrays(info, self.with_polygons and use_mosaic)
            for info in infos
        ]
        boxes, labels, polygons = place_labels(
            arrays, tiles, canvas if use_mosaic else None)
        new, keep = warp_labels(boxes, polygons, M, p.scale, (s, s))
        first = infos[0]
        if first is not results:  # the first image was bad: its substitute
            results.clear()
            results.update(first, dataset=dataset)
        results['img'] = out
        results['img_shape'] = (s, s)
        results['ori_shape'] = (first['height'], first['width'])
        results['gt_bboxes'] = HorizontalBoxes(new[keep].astype(np.float32))
        results['gt_bboxes_labels'] = labels[keep]
        results['gt_ignore_flags'] = np.zeros(int(keep.sum()), bool)
        results['mosaic'] = use_mosaic
        return results

    def __repr__(self) -> str:
        ranges = ', '.join(f'{k}={v}' for k, v in self.ranges.items())
        return (f'{self.__class__.__name__}(img_scale={self.img_scale}, '
                f'mosaic={self.mosaic}, mosaic9={self.mosaic9}, {ranges})')
