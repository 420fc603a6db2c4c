"""The label files of the official YOLO layout: where an image's labels are,
what a row may hold, and a scan of a whole split with its cache.

Semantics of the official ``utils/datasets.py`` (``img2label_paths``,
``cache_labels``, ``segments2boxes``), with these differences, each reported:

* duplicate rows are dropped and reported (as YOLOv5 does); YOLOv7's scan
  rejects the whole image for them;
* a row is a box (5 values) or a polygon (class + at least 3 points) on its
  own; YOLOv7 reads every row of a file as a polygon once one row has more
  than 8 values. A polygon row gives its box and keeps its polygon (cached
  too: paste_in cuts objects out along it);
* coordinates may exceed [0, 1] by ``tolerance`` (rounding of labelling
  tools); the resulting boxes are clipped to the image. Zero sizes and NaN
  are errors (the official check lets them through).

A row with an error makes the scan skip that image (as the official
``cache_labels`` does on its assertion), with ``file:line: reason``.

The cache (``<labels dir>.cache.npz``, plain arrays loaded with
``allow_pickle=False``: nothing is unpickled) holds every image's size,
boxes and messages, keyed by one fingerprint of the listing
(:func:`files_hash`): the paths of all images and label files, each one's
size, modification time and status-change time (``st_ctime``, which a
write always moves, even when the mtime is set back), and the parse
settings. Any image or label file changed, added or removed rebuilds it;
files outside the listing (a non-image file, a label file of no listed
image) do not. Checking it costs one ``os.stat`` per file, gathered into
an array and hashed at once; the image paths are not stored (the
fingerprint covers them), so a valid cache is a handful of arrays.
"""
import hashlib
import json
import math
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .bad_images import BadImageError, probe_image

# 2: listing fingerprint with ctime, no img_files; 3: polygons kept
CACHE_VERSION = 3
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


def img2label_paths(img_paths: Sequence[str]) -> List[str]:
    """:func:`img2label_path` of each path, the folder rule worked out once
    per folder (a split of 100k images sits in a few folders) and the
    name's stem cut with plain string methods."""
    label_dirs: Dict[str, str] = {}
    out = []
    append = out.append
    for path in img_paths:
        cut = path.rfind(os.sep) + 1
        folder, name = path[:cut], path[cut:]  # folder keeps its separator
        label_dir = label_dirs.get(folder)
        if label_dir is None:  # the rule on the folder: 'x.txt' cut off
            label_dir = label_dirs[folder] = img2label_path(
                folder + 'x.x')[:-len('x.txt')]
        dot = name.rfind('.')
        if dot <= 0 or name[0] == '.':  # leading dots: as osp.splitext
            stem = osp.splitext(name)[0]
        else:
            stem = name[:dot]
        append(f'{label_dir}{stem}.txt')
    return out


def parse_label_file(path: str,
                     num_classes: int,
                     tolerance: float = DEFAULT_TOLERANCE,
                     with_polygons: bool = False) -> tuple:
    """Read one label file.

    Args:
        path (str): The ``.txt`` file (it must exist).
        num_classes (int): ``nc`` of the data.yaml; class ids must be below.
        tolerance (float): How far coordinates may leave [0, 1].
        with_polygons (bool): Also return the polygons.

    Returns:
        tuple: the labels, float32 ``(n, 5)`` rows ``class cx cy w h``
        (normalized; a polygon row as its bounding box; duplicates dropped);
        the errors (``file:line: reason``; any error means the image is
        skipped); the notes (dropped duplicates); with ``with_polygons``,
        the polygon of each kept row (float32 ``(k, 2)`` normalized points
        clipped to [0, 1], or None for a box row).
    """
    errors: List[str] = []
    notes: List[str] = []
    rows: List[Tuple[float, ...]] = []
    polygons: List[Optional[np.ndarray]] = []
    first_line: Dict[Tuple[float, ...], int] = {}
    with open(path, encoding='utf-8', errors='replace') as f:
        lines = f.read().splitlines()
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue  # blank line
        where = f'{path}:{lineno}'
        row, reason, polygon = _parse_row(fields, num_classes, tolerance)
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
        polygons.append(polygon)
    labels = np.array(rows, np.float32).reshape(-1, 5)
    if with_polygons:
        return labels, errors, notes, polygons
    return labels, errors, notes


def _parse_row(fields: Sequence[str], num_classes: int,
               tolerance: float) -> tuple:
    """``(class, cx, cy, w, h)`` of a row, None and its polygon (None for a
    box row), or None, its error and None."""
    n = len(fields)
    if n < 5:
        return None, (f'{n} values; a row is "class cx cy w h" or a polygon '
                      '"class x1 y1 x2 y2 x3 y3 ..."'), None
    if n > 5 and ((n - 1) % 2 or n < 7):
        return None, (f'{n} values: neither a box (5) nor a polygon (class + '
                      'an even number of coordinates, at least 3 points)'), \
            None
    try:
        values = [float(v) for v in fields]
    except ValueError as e:
        return None, f'not a number ({e})', None
    if not all(math.isfinite(v) for v in values):
        return None, 'NaN or infinite value', None
    cls, coords = values[0], values[1:]
    if cls != int(cls) or not 0 <= cls < num_classes:
        return None, (f'class {fields[0]} is not an integer in 0..'
                      f'{num_classes - 1} (nc={num_classes} in data.yaml)'), \
            None
    if n == 5 and (coords[2] <= 0 or coords[3] <= 0):
        return None, (f'width {coords[2]:g} / height {coords[3]:g}: sizes '
                      'must be > 0'), None
    low, high = -tolerance, 1 + tolerance
    outside = [v for v in coords if not low <= v <= high]
    if outside:
        return None, (f'coordinate {outside[0]:g} outside [0, 1] (normalized '
                      f'coordinates; tolerance {tolerance:g})'), \
            None
    polygon = None
    if n == 5:
        cx, cy, w, h = coords
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    else:  # polygon -> its bounding box (official segments2boxes)
        xs, ys = coords[0::2], coords[1::2]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        if x2 <= x1 or y2 <= y1:
            return None, 'polygon with a zero-width or zero-height box', None
        polygon = np.clip(np.array(coords, np.float32).reshape(-1, 2), 0, 1)
    # within the tolerance: clip to the image
    x1, y1 = max(x1, 0.), max(y1, 0.)
    x2, y2 = min(x2, 1.), min(y2, 1.)
    return (cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), None, \
        polygon


def file_stats(paths: Sequence[str]) -> np.ndarray:
    """int64 ``(n, 3)``: size, ``st_mtime_ns`` and ``st_ctime_ns`` of each
    path, ``-1`` for one that cannot be stat'ed (a missing label file)."""
    flat: List[int] = []
    stat = os.stat
    for path in paths:  # one syscall each; the rest stays out of the loop
        try:
            st = stat(path)
        except OSError:
            flat += (-1, -1, -1)
            continue
        flat += (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return np.array(flat, np.int64).reshape(-1, 3)


def _path_bytes(paths: Sequence[str]) -> bytes:
    # NUL cannot be in a path; surrogates: names that are not UTF-8
    return '\0'.join(paths).encode('utf-8', 'surrogateescape')


def files_hash(img_files: Sequence[str], label_files: Sequence[str],
               settings: dict) -> str:
    """The fingerprint of a listing: one hash of the parse settings, the
    paths of every image and label file, and their :func:`file_stats` (a
    missing file counts too)."""
    h = hashlib.sha256(json.dumps(dict(settings, v=CACHE_VERSION),
                                  sort_keys=True).encode())
    h.update(np.array([len(img_files), len(label_files)], np.int64)
             .tobytes())
    h.update(_path_bytes(img_files))
    h.update(b'\1')
    h.update(_path_bytes(label_files))
    h.update(file_stats([*img_files, *label_files]).tobytes())
    return h.hexdigest()


LABEL_STATES = ('found', 'missing', 'empty')  # missing/empty: background
SKIP_REASONS = ('', 'bad image', 'bad label')


class LabelScan:
    """The scan of a split, column by column (what the cache holds).

    Attributes:
        img_files (list[str]): The images, in order.
        sizes (np.ndarray): int32 ``(n, 2)`` width, height (0 for a bad
            image).
        label_state (np.ndarray): int8 ``(n, )`` index into
            :data:`LABEL_STATES`.
        skip (np.ndarray): int8 ``(n, )`` index into :data:`SKIP_REASONS`
            (0: the image is used).
        offsets (np.ndarray): int64 ``(n + 1, )``: image ``i``'s rows are
            ``labels[offsets[i]:offsets[i + 1]]``.
        labels (np.ndarray): float32 ``(m, 5)`` rows ``class cx cy w h``.
        poly_offsets (np.ndarray): int64 ``(m + 1, )``: row ``j``'s polygon
            is ``poly_points[poly_offsets[j]:poly_offsets[j + 1]]`` (empty
            for a box row).
        poly_points (np.ndarray): float32 ``(p, 2)`` normalized points.
        messages (dict): image index -> ``(errors, notes)``; an image's own
            error (bad image) is the first of its errors.
    """

    ARRAYS = ('sizes', 'label_state', 'skip', 'offsets', 'labels',
              'poly_offsets', 'poly_points')

    def __init__(self,
                 img_files: List[str],
                 sizes,
                 label_state,
                 skip,
                 offsets,
                 labels,
                 messages: Dict[int, tuple],
                 poly_offsets=None,
                 poly_points=None) -> None:
        self.img_files = img_files
        self.sizes = np.asarray(sizes, np.int32).reshape(-1, 2)
        self.label_state = np.asarray(label_state, np.int8)
        self.skip = np.asarray(skip, np.int8)
        self.offsets = np.asarray(offsets, np.int64)
        self.labels = np.asarray(labels, np.float32).reshape(-1, 5)
        self.poly_offsets = np.zeros(len(self.labels) + 1, np.int64) \
            if poly_offsets is None else np.asarray(poly_offsets, np.int64)
        self.poly_points = np.asarray(
            [] if poly_points is None else poly_points,
            np.float32).reshape(-1, 2)
        self.messages = messages

    @classmethod
    def from_entries(cls, entries: Sequence[dict]) -> 'LabelScan':
        """Gather :func:`scan_image` entries."""
        counts = [len(e['labels']) for e in entries]
        rows = [r for e in entries for r in e['labels']]
        polygons = [p for e in entries
                    for p in e.get('polygons', [None] * len(e['labels']))]
        points = [np.asarray(p, np.float32).reshape(-1, 2)
                  for p in polygons if p is not None]
        return cls(
            img_files=[e['img'] for e in entries],
            sizes=[e.get('size', (0, 0)) for e in entries],
            label_state=[LABEL_STATES.index(e['label']) for e in entries],
            skip=[SKIP_REASONS.index(e.get('skip', '')) for e in entries],
            offsets=np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]),
            labels=rows,
            poly_offsets=np.concatenate([[0], np.cumsum(
                [0 if p is None else len(p) for p in polygons],
                dtype=np.int64)]),
            poly_points=np.concatenate(points) if points else None,
            messages={
                i: (e['errors'], e['notes'])
                for i, e in enumerate(entries) if e['errors'] or e['notes']
            })

    def save(self, path: str, key: str) -> None:
        """Write the cache (npz, no pickled object) atomically."""
        tmp = f'{path}.{os.getpid()}.tmp'
        try:
            with open(tmp, 'wb') as f:
                np.savez(
                    f,
                    version=np.array(CACHE_VERSION),
                    hash=np.array(key),
                    messages=np.array(json.dumps(
                        {str(i): m for i, m in self.messages.items()})),
                    **{k: getattr(self, k) for k in self.ARRAYS})
            os.replace(tmp, path)  # readers never see half a cache
        finally:
            if osp.exists(tmp):
                os.remove(tmp)

    @classmethod
    def load(cls, path: str, key: str,
             img_files: List[str]) -> Optional['LabelScan']:
        """The cache at ``path`` if it was written for ``key``, else None.
        ``key`` covers the paths, so the cache is that of ``img_files``."""
        try:
            with np.load(path, allow_pickle=False) as cache:
                if (int(cache['version']) != CACHE_VERSION
                        or str(cache['hash']) != key):
                    return None
                messages = json.loads(str(cache['messages']))
                scan = cls(
                    img_files=img_files,
                    messages={int(i): tuple(m) for i, m in messages.items()},
                    **{k: cache[k] for k in cls.ARRAYS})
        except (OSError, ValueError, KeyError):
            return None  # none yet, or unreadable: rebuilt
        if len(scan.sizes) != len(img_files):
            return None  # cannot be, with the same key; never trusted
        return scan

    def raise_first(self, start: int = 0) -> None:
        """Raise on the first error of an image from index ``start``."""
        for i in sorted(self.messages):
            errors = self.messages[i][0]
            if i < start or not errors:
                continue
            if self.skip[i] == SKIP_REASONS.index('bad image'):
                raise BadImageError(self.img_files[i],
                                    errors[0].split(': ', 1)[-1])
            raise LabelError(f'{errors[0]} (strict=True)')


def scan_image(img_file: str, label_file: str, num_classes: int,
               tolerance: float) -> dict:
    """One image's scan: ``size`` ([w, h]; absent for a bad image),
    ``labels`` (rows ``class cx cy w h``), ``polygons`` (each row's, or
    None), ``label`` (one of
    :data:`LABEL_STATES`), ``skip`` (the reason, when skipped), ``errors``
    and ``notes``."""
    entry = dict(img=img_file, errors=[], notes=[])
    try:
        entry['size'] = list(probe_image(img_file))
    except BadImageError as e:
        entry['errors'].append(str(e))
    if osp.isfile(label_file):
        labels, errors, notes, polygons = parse_label_file(
            label_file, num_classes, tolerance, with_polygons=True)
        entry['label'] = 'found' if len(labels) or errors else 'empty'
        entry['labels'] = labels.tolist()
        entry['polygons'] = polygons
        entry['errors'] += errors
        entry['notes'] = notes
    else:
        entry['label'] = 'missing'
        entry['labels'] = []
    if entry['errors']:
        entry['skip'] = 'bad image' if 'size' not in entry else 'bad label'
    return entry


def cache_path_for(label_files: Sequence[str], split: str) -> str:
    """``<dir of the first label file>.cache.npz`` beside the labels (the
    official cache is ``<that dir>.cache``), ``<dir>.<split>.cache.npz``
    when that dir is not named after the split."""
    label_dir = osp.dirname(osp.abspath(label_files[0]))
    if osp.basename(label_dir) == split:
        return f'{label_dir}.cache.npz'
    return f'{label_dir}.{split}.cache.npz'


def scan_labels(img_files: Sequence[str],
                num_classes: int,
                split: str = 'train',
                tolerance: float = DEFAULT_TOLERANCE,
                strict: bool = False,
                use_cache: bool = True) -> Tuple[LabelScan, dict]:
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
        tuple: the :class:`LabelScan`, and a dict with ``cache`` (its path
        or None) and ``cache_state`` (``'loaded'``, ``'written'``,
        ``'not written: <why>'`` or ``'off'``).
    """
    label_files = img2label_paths(img_files)
    state = dict(cache=None, cache_state='off')
    settings = dict(nc=num_classes, tolerance=tolerance)
    if use_cache:
        state['cache'] = cache = cache_path_for(label_files, split)
        key = files_hash(img_files, label_files, settings)
        scan = LabelScan.load(cache, key, list(img_files))
        if scan is not None:
            state['cache_state'] = 'loaded'
            if strict:
                scan.raise_first()
            return scan, state
    entries = []
    for img_file, label_file in zip(img_files, label_files):
        entries.append(
            scan_image(img_file, label_file, num_classes, tolerance))
        if strict:
            LabelScan.from_entries(entries[-1:]).raise_first()
    scan = LabelScan.from_entries(entries)
    if use_cache:
        try:
            scan.save(cache, key)
            state['cache_state'] = 'written'
        except OSError as e:
            state['cache_state'] = f'not written: {e}'
    return scan, state
