"""The official ``augment_hsv``."""
import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from mmyolo_ext.registry import TRANSFORMS


def hsv_luts(gains: np.ndarray):
    """The official hue / saturation / value tables (uint8, 256 entries)
    for the random gains ``gains`` (each 1 + U(-1, 1) * hyp)."""
    x = np.arange(256, dtype=np.int16)
    return (((x * gains[0]) % 180).astype(np.uint8),
            np.clip(x * gains[1], 0, 255).astype(np.uint8),
            np.clip(x * gains[2], 0, 255).astype(np.uint8))


@TRANSFORMS.register_module()
class YOLOv7HSVAug(BaseTransform):
    """Random hue, saturation and value gains (hyp ``hsv_h``, ``hsv_s``,
    ``hsv_v``) as the official ``augment_hsv``: the image to HSV, each
    channel through its table, back to BGR, in place (one table per
    channel: OpenCV's 3-channel ``LUT`` measured 1.3x slower than split,
    three 1-channel lookups and merge on 640 x 640).

    Args:
        hsv_h, hsv_s, hsv_v (float): The hyp's gains.
    """

    def __init__(self, hsv_h: float = 0.015, hsv_s: float = 0.7,
                 hsv_v: float = 0.4) -> None:
        self.gains = np.array([hsv_h, hsv_s, hsv_v])

    def transform(self, results: dict) -> dict:
        if not self.gains.any():
            return results
        r = np.random.uniform(-1, 1, 3) * self.gains + 1
        img = results['img']
        if not img.flags.writeable or not img.flags.c_contiguous:
            img = np.ascontiguousarray(img).copy()
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        channels = cv2.split(hsv)
        for channel, lut in zip(channels, hsv_luts(r)):
            cv2.LUT(channel, lut, dst=channel)
        cv2.merge(channels, dst=hsv)
        cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=img)
        results['img'] = img
        return results

    def __repr__(self) -> str:
        h, s, v = self.gains
        return f'{self.__class__.__name__}(hsv_h={h}, hsv_s={s}, hsv_v={v})'
