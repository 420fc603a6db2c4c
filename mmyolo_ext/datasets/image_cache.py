"""Decoded training images kept between epochs (the official
``--cache-images``; Ultralytics' ``cache=ram|disk``).

Each image is stored as the official ``load_image`` makes it (long side =
the input size), so a cached sample skips the file read, the decode and the
resize. ``'ram'``: one shared-memory block (a memory-mapped file in
``/dev/shm``), filled once by the main process and read by every dataloader
worker without a copy (forked workers inherit the mapping; spawned ones map
the same file). ``'disk'``: one ``.npy``
per image in ``<first image's folder>_npy<size>/``, memory-mapped when read,
kept for the next run while the listing's fingerprint (the label cache's
:func:`~mmyolo_ext.datasets.yolo_labels.files_hash`: paths, sizes and
modification times of the images, and the size) is unchanged.

The memory or disk space needed is estimated from the recorded image sizes
and logged before anything is decoded; a RAM cache that would not fit in the
available memory is refused with a message saying so.
"""
import glob
import logging
import os
import os.path as osp
import time
import tempfile
import weakref
from multiprocessing.pool import ThreadPool
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmengine.logging import print_log

from .transforms.image_source import decode, resized_size
from .yolo_labels import files_hash

MODES = ('ram', 'disk')
RAM_FRACTION = 0.9  # of the available memory a RAM cache may take
CACHE_VERSION = 1


def available_memory() -> int:
    """Bytes of memory available to new allocations (MemAvailable)."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil  # not Linux
    return psutil.virtual_memory().available


def shared_memory_space() -> Optional[int]:
    """Free bytes of /dev/shm, where Linux puts shared memory (a container's
    is often 64 MB: writing past it kills the process with SIGBUS)."""
    try:
        st = os.statvfs('/dev/shm')
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def load_resized(path: str, size: Tuple[int, int]) -> Optional[np.ndarray]:
    """The image at ``path`` as the official ``load_image`` (training):
    resized to ``size`` (w, h) with INTER_LINEAR. None if it does not
    decode."""
    try:
        with open(path, 'rb') as f:
            content = f.read()
    except OSError:
        return None
    try:
        img = decode(content, path, 1)
    except cv2.error:
        return None
    if img is None:
        return None
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[1::-1] != tuple(size):
        img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    return img


class ImageCache:
    """The cached images of a dataset, by sample index.

    Build it with :meth:`build`; :meth:`get` returns an image or None (not
    cached: the image failed to decode when the cache was filled, and the
    loader reports it when it reads the file).
    """

    def __init__(self, mode: str, img_size: int,
                 sizes: np.ndarray) -> None:
        self.mode = mode
        self.img_size = img_size
        self.sizes = sizes  # (n, 2) w, h of each resized image
        self.filled = np.zeros(len(sizes), bool)
        nbytes = sizes[:, 0].astype(np.int64) * sizes[:, 1] * 3
        self.offsets = np.concatenate([[0], np.cumsum(nbytes)])
        self._block: Optional[np.memmap] = None  # 'ram'
        self._block_path: Optional[str] = None
        self.files: List[str] = []  # 'disk'

    # ---- building -----------------------------------------------------
    @classmethod
    def build(cls, paths: Sequence[str], sizes: Sequence[Tuple[int, int]],
              mode: str, img_size: int, name: str = 'dataset',
              num_threads: int = 8) -> 'ImageCache':
        """Cache the images ``paths`` whose original (w, h) are ``sizes``
        at ``img_size``."""
        if mode not in MODES:
            raise ValueError(f"cache_images={mode!r}: use 'ram', 'disk' or "
                             'None')
        resized = np.array(
            [resized_size(int(w), int(h), img_size) for w, h in sizes],
            np.int64).reshape(-1, 2)
        cache = cls(mode, img_size, resized)
        need = int(cache.offsets[-1])
        if mode == 'ram':
            free = available_memory()
            print_log(
                f"cache_images='ram' ({name}): {len(paths)} images at "
                f'{img_size} need {need / 1e9:.2f} GB of shared memory; '
                f'{free / 1e9:.2f} GB available', logger='current')
            if need > RAM_FRACTION * free:
                raise MemoryError(
                    f"cache_images='ram' ({name}): {len(paths)} images at "
                    f'{img_size} need {need / 1e9:.2f} GB but only '
                    f'{free / 1e9:.2f} GB of memory is available (at most '
                    f'{RAM_FRACTION:.0%} is used): use '
                    "cache_images='disk' or None, or a smaller img_scale")
            shm_free = shared_memory_space()
            if shm_free is not None and need > shm_free:
                raise MemoryError(
                    f"cache_images='ram' ({name}): {need / 1e9:.2f} GB "
                    f'needed but /dev/shm has {shm_free / 1e9:.2f} GB free '
                    '(in docker: --shm-size); use cache_images=\'disk\'')
            cache._create_block(max(need, 1))
        else:
            folder = osp.dirname(osp.abspath(paths[0])) + f'_npy{img_size}'
            print_log(
                f"cache_images='disk' ({name}): {len(paths)} images at "
                f'{img_size}, {need / 1e9:.2f} GB of .npy files in {folder}',
                logger='current')
            cache.files = [
                osp.join(folder, f'{i:07d}.npy') for i in range(len(paths))
            ]
            if cache._disk_valid(folder, paths):
                cache.filled[:] = [osp.exists(f) for f in cache.files]
                print_log(f"cache_images='disk': {folder} is up to date",
                          logger='current')
                return cache
        cache._fill(paths, num_threads, name)
        if mode == 'disk':
            with open(osp.join(folder, 'fingerprint'), 'w') as f:
                f.write(cache._fingerprint(paths))
        return cache

    def _fingerprint(self, paths: Sequence[str]) -> str:
        return files_hash(paths, [], dict(img_size=self.img_size,
                                          image_cache=CACHE_VERSION))

    def _disk_valid(self, folder: str, paths: Sequence[str]) -> bool:
        os.makedirs(folder, exist_ok=True)
        stamp = osp.join(folder, 'fingerprint')
        if osp.exists(stamp):
            with open(stamp) as f:
                if f.read() == self._fingerprint(paths):
                    return True
            os.remove(stamp)
        for old in glob.glob(osp.join(folder, '*.npy')):
            os.remove(old)  # another listing's images
        return False

    def _fill(self, paths: Sequence[str], num_threads: int,
              name: str) -> None:
        start = time.perf_counter()

        def one(i: int) -> None:
            img = load_resized(paths[i], tuple(int(v) for v in self.sizes[i]))
            if img is None:
                return
            if self.mode == 'ram':
                self._view(i)[...] = img
            else:
                np.save(self.files[i], img)
            self.filled[i] = True

        with ThreadPool(max(1, min(num_threads, os.cpu_count() or 1))) as p:
            p.map(one, range(len(paths)), chunksize=16)
        missing = int((~self.filled).sum())
        print_log(
            f"cache_images='{self.mode}' ({name}): {len(paths) - missing} "
            f'images cached in {time.perf_counter() - start:.1f} s'
            + (f'; {missing} did not decode (reported when read)'
               if missing else ''),
            logger='current',
            level=logging.WARNING if missing else logging.INFO)

    def _create_block(self, nbytes: int) -> None:
        folder = '/dev/shm' if osp.isdir('/dev/shm') else None
        fd, path = tempfile.mkstemp(prefix='mmyolo_ext_images_', dir=folder)
        os.close(fd)
        self._block_path = path
        self._block = np.memmap(path, np.uint8, 'w+', shape=(nbytes, ))
        # the file goes with the creating process (or close()); mappings
        # made before then stay valid
        self._finalizer = weakref.finalize(self, _remove, path)

    # ---- reading ------------------------------------------------------
    def _view(self, i: int) -> np.ndarray:
        w, h = (int(v) for v in self.sizes[i])
        start = int(self.offsets[i])
        return self._block[start:start + w * h * 3].reshape(h, w, 3)

    def get(self, i: int) -> Optional[np.ndarray]:
        """Image ``i`` (read-only for 'disk'), or None if not cached."""
        if not self.filled[i]:
            return None
        if self.mode == 'ram':
            return self._view(i)
        return np.load(self.files[i], mmap_mode='r')

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def nbytes(self) -> int:
        return int(self.offsets[-1])

    # ---- sharing with spawned workers, and cleanup ----------------------
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop('_finalizer', None)
        state['_block'] = None  # a spawned worker maps the file again
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self._block_path is not None:
            self._block = np.memmap(self._block_path, np.uint8, 'r+',
                                    shape=(max(self.nbytes, 1), ))

    def close(self) -> None:
        """Remove the RAM block's file (views already made stay valid)."""
        finalizer = self.__dict__.get('_finalizer')
        if finalizer is not None:
            finalizer()


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def cache_size_of(pipeline) -> int:
    """The input size of a dataset's pipeline: that of its first transform
    with a ``cache_size`` (``YOLOv7MosaicPerspective``)."""
    for t in getattr(pipeline, 'transforms', ()):
        if getattr(t, 'cache_size', None):
            return int(t.cache_size)
    raise ValueError(
        'cache_images needs a train pipeline that reads cached images '
        '(YOLOv7MosaicPerspective, as the recipes build with '
        'yolov7_train_pipeline); this pipeline has none')


def build_dataset_cache(dataset, mode: Optional[str]) -> Optional[ImageCache]:
    """The image cache of a (fully initialized) dataset, or None."""
    if mode is None:
        return None
    n = len(dataset)
    infos = [dataset.get_data_info(i) for i in range(n)]
    return ImageCache.build(
        [i['img_path'] for i in infos],
        [(i['width'], i['height']) for i in infos],
        mode,
        cache_size_of(dataset.pipeline),
        name=type(dataset).__name__)
