"""The images of a training sample as the official ``load_image`` gives
them (long side = the input size), read the cheap way: from the dataset's
image cache when it has one, else decoded by libjpeg-turbo at 1/2, 1/4 or
1/8 scale (OpenCV's ``IMREAD_REDUCED_*``, DCT scaling) when the image will
be shrunk at least that much anyway; the warp that follows does the rest of
the resize. A bad image is reported and a random other one drawn."""
import random
from typing import NamedTuple, Optional, Tuple

import cv2
import numpy as np
from mmengine import fileio

from ..bad_images import bytes_defect, report_bad_image

_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
            4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
_JPEG_SUFFIXES = ('.jpg', '.jpeg', '.jpe', '.jfif')
MAX_SUBSTITUTES = 10


class SourceImage(NamedTuple):
    """A loaded image and how its pixels map to the official resized one.

    Attributes:
        img: uint8 (h, w, 3) BGR: the decoded (maybe reduced) file, or the
            cached resized image.
        info: the data info it belongs to (a substitute's, if the first
            image was bad).
        size: (w, h) of the official resized image (``load_image``).
        scale: (kx, ky): resized pixel centre u = (v + 0.5) * k - 0.5 of
            source pixel centre v.
    """
    img: np.ndarray
    info: dict
    size: Tuple[int, int]
    scale: Tuple[float, float]


def resized_size(width: int, height: int, s: int) -> Tuple[int, int]:
    """The official ``load_image`` size: long side ``s``, truncated."""
    r = s / max(height, width)
    if r == 1:
        return width, height
    return int(width * r), int(height * r)


def reduction_for(shrink: float) -> int:
    """The largest JPEG DCT scaling 1/f (f in 1, 2, 4, 8) that keeps the
    decoded image at least as large as its final size (``shrink`` = final /
    original, < 1 when shrinking)."""
    for f in (8, 4, 2):
        if shrink * f <= 1:
            return f
    return 1


def decode(content: bytes, path: str, reduction: int) -> np.ndarray:
    """cv2.imdecode of a file's bytes, DCT-scaled by 1/``reduction`` when the
    file is a JPEG (other formats decode at full size)."""
    buf = np.frombuffer(content, np.uint8)
    if reduction > 1 and not path.lower().endswith(_JPEG_SUFFIXES):
        reduction = 1
    img = cv2.imdecode(buf, _REDUCED[reduction])
    return img


class ImageSource:
    """Loads the images of a sample for one input size ``s``.

    Args:
        img_size (int): The input size (the official ``img_size``).
        reduce_decode (bool): Allow DCT-scaled JPEG decoding. Defaults to
            True.
        backend_args (dict, optional): mmengine file backend arguments.
    """

    def __init__(self,
                 img_size: int,
                 reduce_decode: bool = True,
                 backend_args: Optional[dict] = None) -> None:
        self.img_size = img_size
        self.reduce_decode = reduce_decode
        self.backend_args = backend_args

    def _read(self, info: dict, shrink: float):
        path = info['img_path']
        try:
            content = fileio.get(path, backend_args=self.backend_args)
        except FileNotFoundError:
            return None, 'missing file', 1
        except Exception as e:  # any backend's read error
            return None, f'unreadable ({type(e).__name__}: {e})', 1
        defect = bytes_defect(content)
        if defect:
            return None, defect, 1
        width, height = info.get('width'), info.get('height')
        f = 1
        if self.reduce_decode and width and height:
            w, _ = resized_size(width, height, self.img_size)
            f = reduction_for(shrink * w / width)
        try:
            img = decode(content, path, f)
        except cv2.error as e:
            return None, f'not decodable ({e})', 1
        if img is None or img.size == 0:
            return None, 'not decodable as an image', 1
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        if f > 1 and (abs(img.shape[1] * f - width) >= f
                      or abs(img.shape[0] * f - height) >= f):
            f = 1  # the info's size is not the file's (EXIF rotation)
            img = decode(content, path, 1)
        return img, None, f

    def load(self, dataset, info: dict, shrink: float = 1.0) -> SourceImage:
        """The image of ``info`` (a data info of ``dataset``; its
        ``sample_idx`` finds it in the dataset's cache), for a sample that
        will shrink the resized image by ``shrink`` (only to choose the
        decode scale); a random other one if it is bad."""
        cache = getattr(dataset, 'image_cache', None)
        for attempt in range(MAX_SUBSTITUTES + 1):
            if cache is not None and 'sample_idx' in info:
                img = cache.get(info['sample_idx'])
                if img is not None:
                    h, w = img.shape[:2]
                    return SourceImage(img, info, (w, h), (1.0, 1.0))
            img, reason, f = self._read(info, shrink)
            if reason is None:
                h0, w0 = img.shape[0] * f, img.shape[1] * f
                if f > 1:  # the file's own size (the reduced is rounded up)
                    w0, h0 = info['width'], info['height']
                size = resized_size(w0, h0, self.img_size)
                return SourceImage(img, info, size,
                                   (f * size[0] / w0, f * size[1] / h0))
            report_bad_image(info['img_path'], reason,
                             'skipped (another sample takes its place)')
            if dataset is None or attempt == MAX_SUBSTITUTES:
                break
            info = dataset.get_data_info(random.randrange(len(dataset)))
        raise RuntimeError(
            f'{MAX_SUBSTITUTES + 1} bad images in a row (the last: '
            f'{info["img_path"]}): most of the dataset cannot be loaded; '
            'list its bad files with tools/analysis_tools/check_data.py '
            'CONFIG')
