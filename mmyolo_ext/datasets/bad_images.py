"""Bad images: what makes an image file unusable, and the record of the bad
ones met while loading, shared by a dataloader's worker processes.

A detection run meets missing files, zero-byte files, truncated downloads and
files that are not images at all. The checks here name which of these a file
is; :class:`~mmyolo_ext.datasets.transforms.TolerantLoadImageFromFile` uses
them on every load (COCO-json datasets and :class:`YOLODataset` alike),
:class:`YOLODataset` on every image when it scans its labels, and
``tools/analysis_tools/check_data.py`` on every image of a config before training.

The loading transform runs in the dataloader's worker processes, so what it
records must reach the main process: :class:`BadImageLog` appends one line
per bad load to a file in a directory named by an environment variable
(inherited by forked and spawned workers alike), and creates one marker file
per bad path with ``O_EXCL``, so exactly one process logs each bad image
once. :class:`~mmyolo_ext.engine.hooks.BadImageReportHook` reads the lines
after every epoch and logs the epoch's count and the run's summary.
"""
import atexit
import hashlib
import json
import logging
import os
import os.path as osp
import shutil
import tempfile
from typing import List, Optional, Tuple

from mmengine.logging import print_log

# the image formats the official dataset accepts (utils/datasets.py)
IMG_FORMATS = ('bmp', 'jpg', 'jpeg', 'png', 'tif', 'tiff', 'dng', 'webp',
               'mpo')
_JPEG_SOI, _JPEG_EOI = b'\xff\xd8', b'\xff\xd9'
_PNG_SIGNATURE, _PNG_IEND = b'\x89PNG\r\n\x1a\n', b'IEND\xaeB`\x82'
_TAIL = 64  # bytes read from a file's end to find its end marker
MIN_IMAGE_SIDE = 10  # the official dataset rejects images under 10 px


class BadImageError(ValueError):
    """An image file that cannot be used; the message says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f'{path}: {reason}')
        self.path = path
        self.reason = reason


def truncation_defect(head: bytes, tail: bytes) -> Optional[str]:
    """Why a JPEG or PNG whose first bytes are ``head`` and last bytes
    ``tail`` is cut short, or None.

    A JPEG ends with its end-of-image marker (the check the official YOLOv5
    dataset makes; zero padding after it is allowed), a PNG with its IEND
    chunk. A decoder fills the missing rows of a truncated JPEG with grey
    without an error, so the marker is what tells.
    """
    if head.startswith(_JPEG_SOI) and not tail.rstrip(b'\x00').endswith(
            _JPEG_EOI):
        return 'truncated JPEG (no end-of-image marker)'
    if head.startswith(_PNG_SIGNATURE) and not tail.endswith(_PNG_IEND):
        return 'truncated PNG (no IEND chunk)'
    return None


def bytes_defect(content: bytes) -> Optional[str]:
    """Why the bytes of an image file cannot be a whole image, before
    decoding, or None."""
    if not content:
        return 'empty file (0 bytes)'
    return truncation_defect(content[:len(_PNG_SIGNATURE)], content[-_TAIL:])


def probe_image(path: str) -> Tuple[int, int]:
    """The (width, height) of an image file, from its header, as it will be
    loaded (EXIF orientation applied, as the official ``exif_size`` and
    OpenCV's decoder do); raises :class:`BadImageError` when the file is
    missing, empty, truncated, not an image, not one of :data:`IMG_FORMATS`
    or under :data:`MIN_IMAGE_SIDE` px.

    It reads the header and the last bytes only (the official dataset's scan
    does the same with PIL); a file whose middle is corrupt is found when it
    is decoded (the loading transform, ``tools/analysis_tools/check_data.py``).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        size = os.path.getsize(path)
        with open(path, 'rb') as f:
            head = f.read(len(_PNG_SIGNATURE))
            f.seek(max(size - _TAIL, 0))
            tail = f.read()
    except FileNotFoundError:
        raise BadImageError(path, 'missing file') from None
    except OSError as e:
        raise BadImageError(path, f'unreadable ({e})') from None
    if size == 0:
        raise BadImageError(path, 'empty file (0 bytes)')
    defect = truncation_defect(head, tail)
    if defect:
        raise BadImageError(path, defect)
    try:
        with Image.open(path) as im:
            width, height = im.size
            fmt = (im.format or '').lower()
            orientation = im.getexif().get(0x0112, 1)  # EXIF Orientation
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise BadImageError(path,
                            f'not decodable as an image ({e})') from None
    if fmt not in IMG_FORMATS:
        raise BadImageError(path, f'image format {fmt!r} is not one of '
                            f'{IMG_FORMATS}')
    if orientation in (5, 6, 7, 8):  # a quarter turn swaps the sides
        width, height = height, width
    if min(width, height) < MIN_IMAGE_SIDE:
        raise BadImageError(
            path, f'image of {width}x{height} px, under {MIN_IMAGE_SIDE} px')
    return width, height


class BadImageLog:
    """The bad images met while loading, recorded in a directory that every
    process of the run shares.

    Use :meth:`shared` (the directory named by ``$MMYOLO_EXT_BAD_IMAGE_DIR``,
    created when unset) rather than the constructor; :meth:`start_new`
    begins a fresh record (the report hook does, before a run starts its
    workers).

    Args:
        directory (str): Where the record lives.
    """

    ENV = 'MMYOLO_EXT_BAD_IMAGE_DIR'
    EVENTS = 'events.jsonl'

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.events_path = osp.join(directory, self.EVENTS)

    @classmethod
    def shared(cls) -> 'BadImageLog':
        """The record this process's run writes to (created if none)."""
        directory = os.environ.get(cls.ENV)
        if not directory or not osp.isdir(directory):
            return cls.start_new()
        return cls(directory)

    @classmethod
    def start_new(cls) -> 'BadImageLog':
        """A fresh, empty record, made the shared one of this process and of
        the processes it starts from now on (removed when it exits)."""
        directory = tempfile.mkdtemp(prefix='mmyolo_ext_bad_images_')
        os.environ[cls.ENV] = directory
        creator = os.getpid()

        def remove() -> None:
            if os.getpid() == creator:  # not from a forked worker's exit
                shutil.rmtree(directory, ignore_errors=True)

        atexit.register(remove)
        return cls(directory)

    def record(self, path: str, reason: str) -> bool:
        """Note one bad load of ``path``; True the first time any process of
        the run notes this path (that one logs it)."""
        line = json.dumps(dict(path=path, reason=reason)) + '\n'
        fd = os.open(self.events_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            os.write(fd, line.encode())  # one write: lines never interleave
        finally:
            os.close(fd)
        marker = osp.join(self.directory,
                          hashlib.sha1(path.encode()).hexdigest() + '.seen')
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    def read(self, offset: int = 0) -> Tuple[List[Tuple[str, str]], int]:
        """The (path, reason) of each bad load recorded after byte
        ``offset``, and the offset after them."""
        if not osp.isfile(self.events_path):
            return [], offset
        with open(self.events_path, 'rb') as f:
            f.seek(offset)
            data = f.read()
        end = data.rfind(b'\n') + 1  # a line being written is read next time
        events = []
        for line in data[:end].splitlines():
            event = json.loads(line)
            events.append((event['path'], event['reason']))
        return events, offset + end


def report_bad_image(path: str, reason: str, action: str) -> None:
    """Record a bad load in the shared log and, the first time the run meets
    this path, log a warning naming it, why, and what was done instead."""
    if BadImageLog.shared().record(path, reason):
        print_log(
            f'bad image {path}: {reason}; {action} (logged once per image; '
            'the count per epoch follows each epoch)',
            logger='current',
            level=logging.WARNING)
