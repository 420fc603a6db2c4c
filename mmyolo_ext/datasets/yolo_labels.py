"""The label files of the official YOLO layout: where an image's labels are,
what a row may hold, and a scan of a whole split with its cache.

Semantics of the official ``utils/datasets.py`` (``img2label_paths``,
``cache_labels``, ``segments2boxes``), with these differences, each reported:

* duplicate rows are dropped and reported (as YOLOv5 does); YOLOv7's scan
  rejects the whole image for them;
* a row is a box (5 values) or a polygon (class + at least 3 points) on its
  own; YOLOv7 reads every row of a file as a polygon once one row has more
  than 8 values;
* coordinates may exceed [0, 1] by ``tolerance`` (rounding of labelling
  tools); the resulting boxes are clipped to the image. Zero sizes and NaN
  are errors (the official check lets them through).

A row with an error makes the scan skip that image (as the official
``cache_labels`` does on its assertion), with ``file:line: reason``.

The cache (``<labels dir>.cache.json``, plain JSON: nothing is
unpickled) holds every image's size, boxes and messages, keyed by a hash of
the paths, sizes and modification times of all images and label files and
of the parse settings; any change rebuilds it.
"""
import hashlib
import json
import math
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .bad_images import BadImageError, probe_image

CACHE_VERSION = 1
DEFAULT_TOLERANCE = 0.005  # ~3 px at 640: rounding, not a wrong label


class LabelError(ValueError):
    """A bad row of a label file (raised by ``strict`` scans)."""


def img2label_path(img_path: str) -> str:
    """The label file of an image: the last ``/images/`` of its path becomes
    ``/labels/`` and its extension ``.txt`` (YOLOv5's rule; YOLOv7 replaces
    the first ``/images/``, which differs only for paths holding two)."""
    sa, sb = f'{os.sep}images{os.sep}', f'{os.sep}labels{os.sep}'
    head, sep, tail = img_path.rpartition(sa)
    path = head + sb + tail if sep else img_path
    return osp.splitext(path)[0] + '.txt'


def parse_label_file(
        path: str, num_classes: int,
        tolerance: float = DEFAULT_TOLERANCE
) -> Tuple[np.ndarray, List[str], List[str]]:
    """Read one label file.

    Args:
        path (str): The ``.txt`` file (it must exist).
        num_classes (int): ``nc`` of the data.yaml; class ids must be below.
        tolerance (float): How far coordinates may leave [0, 1].

    Returns:
        tuple: the labels, float32 ``(n, 5)`` rows ``class cx cy w h``
        (normalized; a polygon row as its bounding box; duplicates dropped);
        the errors (``file:line: reason``; any error means the image is
        skipped); the notes (dropped duplicates).
    """
    errors: List[str] = []
    notes: List[str] = []
    rows: List[Tuple[float, ...]] = []
    first_line: Dict[Tuple[float, ...], int] = {}
    with open(path, encoding='utf-8', errors='replace') as f:
        lines = f.read().splitlines()
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue  # blank line
        where = f'{path}:{lineno}'
        row, reason = _parse_row(fields, num_classes, tolerance)
        if reason is not None:
            errors.append(f'{where}: {reason} (row {line.strip()!r})')
            continue
        key = tuple(np.float32(v).item() for v in row)  # as official: f32
        if key in first_line:
            notes.append(f'{where}: duplicate of line {first_line[key]}, '
                         'dropped')
            continue
        first_line[key] = lineno
        rows.append(key)
    labels = np.array(rows, np.float32).reshape(-1, 5)
    return labels, errors, notes


def _parse_row(fields: Sequence[str], num_classes: int,
               tolerance: float) -> Tuple[Optional[tuple], Optional[str]]:
    """``(class, cx, cy, w, h)`` of a row and None, or None and its error."""
    n = len(fields)
    if n < 5:
        return None, (f'{n} values; a row is "class cx cy w h" or a polygon '
                      '"class x1 y1 x2 y2 x3 y3 ..."')
    if n > 5 and ((n - 1) % 2 or n < 7):
        return None, (f'{n} values: neither a box (5) nor a polygon (class + '
                      'an even number of coordinates, at least 3 points)')
    try:
        values = [float(v) for v in fields]
    except ValueError as e:
        return None, f'not a number ({e})'
    if not all(math.isfinite(v) for v in values):
        return None, 'NaN or infinite value'
    cls, coords = values[0], values[1:]
    if cls != int(cls) or not 0 <= cls < num_classes:
        return None, (f'class {fields[0]} is not an integer in 0..'
                      f'{num_classes - 1} (nc={num_classes} in data.yaml)')
    if n == 5 and (coords[2] <= 0 or coords[3] <= 0):
        return None, (f'width {coords[2]:g} / height {coords[3]:g}: sizes '
                      'must be > 0')
    low, high = -tolerance, 1 + tolerance
    outside = [v for v in coords if not low <= v <= high]
    if outside:
        return None, (f'coordinate {outside[0]:g} outside [0, 1] (normalized '
                      f'coordinates; tolerance {tolerance:g})')
    if n == 5:
        cx, cy, w, h = coords
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    else:  # polygon -> its bounding box (official segments2boxes)
        xs, ys = coords[0::2], coords[1::2]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        if x2 <= x1 or y2 <= y1:
            return None, 'polygon with a zero-width or zero-height box'
    # within the tolerance: clip to the image
    x1, y1 = max(x1, 0.), max(y1, 0.)
    x2, y2 = min(x2, 1.), min(y2, 1.)
    return (cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), None


def _stat_key(path: str) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f'{path}\0-'
    return f'{path}\0{st.st_size}\0{st.st_mtime_ns}'


def files_hash(img_files: Sequence[str], label_files: Sequence[str],
               settings: dict) -> str:
    """Hash of the paths, sizes and modification times of every image and
    label file (a missing one counts too), and of the parse settings."""
    h = hashlib.sha256(json.dumps(dict(settings, v=CACHE_VERSION),
                                  sort_keys=True).encode())
    for path in (*img_files, *label_files):
        h.update(_stat_key(path).encode())
        h.update(b'\n')
    return h.hexdigest()


def scan_image(img_file: str, label_file: str, num_classes: int,
               tolerance: float) -> dict:
    """The cache entry of one image: ``size`` ([w, h]) and ``labels`` (rows
    ``class cx cy w h``), or ``skip`` (the reason); ``label`` (``found``,
    ``missing``, ``empty``), ``errors`` and ``notes``."""
    entry = dict(img=img_file, errors=[], notes=[])
    try:
        entry['size'] = list(probe_image(img_file))
    except BadImageError as e:
        entry['errors'].append(str(e))
    if osp.isfile(label_file):
        labels, errors, notes = parse_label_file(label_file, num_classes,
                                                 tolerance)
        entry['label'] = 'found' if len(labels) or errors else 'empty'
        entry['labels'] = labels.tolist()
        entry['errors'] += errors
        entry['notes'] = notes
    else:
        entry['label'] = 'missing'
        entry['labels'] = []
    if entry['errors']:
        entry['skip'] = 'bad image' if 'size' not in entry else 'bad label'
    return entry


def cache_path_for(label_files: Sequence[str], split: str) -> str:
    """``<dir of the first label file>.cache.json`` beside the labels (the
    official cache is ``<that dir>.cache``), ``<dir>.<split>.cache.json``
    when that dir is not named after the split."""
    label_dir = osp.dirname(osp.abspath(label_files[0]))
    if osp.basename(label_dir) == split:
        return f'{label_dir}.cache.json'
    return f'{label_dir}.{split}.cache.json'


def scan_labels(img_files: Sequence[str],
                num_classes: int,
                split: str = 'train',
                tolerance: float = DEFAULT_TOLERANCE,
                strict: bool = False,
                use_cache: bool = True) -> dict:
    """Scan (or load from the cache) the labels of a split's images.

    Args:
        img_files (Sequence[str]): The split's image paths.
        num_classes (int): ``nc`` of the data.yaml.
        split (str): Name of the split, part of the cache file's name.
        tolerance (float): How far coordinates may leave [0, 1].
        strict (bool): Raise :class:`LabelError` (or
            :class:`~mmyolo_ext.datasets.bad_images.BadImageError`) on the
            first error instead of skipping the image.
        use_cache (bool): Read and write the cache file.

    Returns:
        dict: ``entries`` (one per image, see :func:`scan_image`),
        ``cache`` (its path or None), ``cache_state`` (``'loaded'``,
        ``'written'``, ``'not written: <why>'`` or ``'off'``).
    """
    label_files = [img2label_path(p) for p in img_files]
    result = dict(cache=None, cache_state='off')
    settings = dict(nc=num_classes, tolerance=tolerance)
    if use_cache and img_files:
        cache = cache_path_for(label_files, split)
        result['cache'] = cache
        key = files_hash(img_files, label_files, settings)
        entries = _read_cache(cache, key)
        if entries is not None:
            result.update(entries=entries, cache_state='loaded')
            if strict:
                _raise_first(entries)
            return result
    entries = []
    for img_file, label_file in zip(img_files, label_files):
        entry = scan_image(img_file, label_file, num_classes, tolerance)
        if strict:
            _raise_first([entry])
        entries.append(entry)
    result['entries'] = entries
    if use_cache and img_files:
        result['cache_state'] = _write_cache(cache, key, entries)
    return result


def _raise_first(entries: Sequence[dict]) -> None:
    for entry in entries:
        if entry['errors']:
            error = entry['errors'][0]
            if 'size' not in entry:
                raise BadImageError(entry['img'], error.split(': ', 1)[-1])
            raise LabelError(f'{error} (strict=True)')


def _read_cache(path: str, key: str) -> Optional[List[dict]]:
    try:
        with open(path) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        return None  # none yet, or unreadable: rebuilt
    if cache.get('version') != CACHE_VERSION or cache.get('hash') != key:
        return None
    return cache['entries']


def _write_cache(path: str, key: str, entries: List[dict]) -> str:
    tmp = f'{path}.{os.getpid()}.tmp'
    try:
        with open(tmp, 'w') as f:
            json.dump(dict(version=CACHE_VERSION, hash=key, entries=entries),
                      f, separators=(',', ':'))
        os.replace(tmp, path)  # atomic: readers never see half a cache
    except OSError as e:
        if osp.exists(tmp):
            os.remove(tmp)
        return f'not written: {e}'
    return 'written'
