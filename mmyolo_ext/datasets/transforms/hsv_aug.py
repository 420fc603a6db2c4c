"""The official ``augment_hsv``: random hue, saturation and value gains."""
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


def apply_hsv_gains(img: np.ndarray, gains: np.ndarray) -> None:
    """Apply ``gains`` to the contiguous uint8 BGR image ``img`` in place, as
    the official ``augment_hsv``: to HSV, each channel through its table,
    back to BGR (one table per channel: OpenCV's 3-channel ``LUT`` measured
    1.3x slower than split, three 1-channel lookups and merge on 640 x
    640)."""
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    channels = cv2.split(hsv)
    for channel, lut in zip(channels, hsv_luts(gains)):
        cv2.LUT(channel, lut, dst=channel)
    cv2.merge(channels, dst=hsv)
    cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=img)


@TRANSFORMS.register_module()
class YOLOv7HSVAug(BaseTransform):
    """Random hue, saturation and value gains (hyp ``hsv_h``, ``hsv_s``,
    ``hsv_v``) as the official ``augment_hsv``.

    The gains are drawn here, per sample, in the official order of random
    draws. With ``on_device=True`` they are not applied here but kept in
    ``results['hsv_gains']`` (packed as a meta key) for
    :class:`YOLOv7DataPreprocessor`, which applies them to the whole batch
    where the model runs: on a GPU the data workers save the two colour
    conversions of every sample (the largest cost of a sample once images
    are cached). HSV is per pixel, so moving it after the flips changes
    nothing; what ``paste_in`` pastes after it is colour-shifted too there.

    Args:
        hsv_h, hsv_s, hsv_v (float): The hyp's gains.
        on_device (bool): Leave the gains to the data preprocessor.
    """

    def __init__(self,
                 hsv_h: float = 0.015,
                 hsv_s: float = 0.7,
                 hsv_v: float = 0.4,
                 on_device: bool = False) -> None:
        self.gains = np.array([hsv_h, hsv_s, hsv_v])
        self.on_device = on_device

    def transform(self, results: dict) -> dict:
        if not self.gains.any():
            return results
        gains = np.random.uniform(-1, 1, 3) * self.gains + 1
        if self.on_device:
            results['hsv_gains'] = gains
            return results
        img = results['img']
        if not img.flags.writeable or not img.flags.c_contiguous:
            img = np.ascontiguousarray(img).copy()
        apply_hsv_gains(img, gains)
        results['img'] = img
        return results

    def __repr__(self) -> str:
        h, s, v = self.gains
        return (f'{self.__class__.__name__}(hsv_h={h}, hsv_s={s}, '
                f'hsv_v={v}, on_device={self.on_device})')
