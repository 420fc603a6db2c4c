"""Image loading that reports a bad image and carries on."""
import copy

import mmcv
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine import fileio

from mmyolo_ext.registry import TRANSFORMS
from .bad_images import bytes_defect, report_bad_image

_PAD_VALUE = 114  # the letterbox grey of the official code


@TRANSFORMS.register_module()
class TolerantLoadImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` that survives missing, empty, truncated and
    undecodable image files.

    mmcv's loader raises on a missing file (``ignore_empty`` would hide it)
    and asserts on one that does not decode; a truncated JPEG decodes without
    error, its lost rows grey. Here each of these is reported by path and
    reason (logged once per image, counted in the run's
    :class:`~mmyolo_ext.datasets.bad_images.BadImageLog`), then:

    * ``on_bad='skip'`` (training): another sample takes its place. When
      the results carry their ``dataset`` (MMYOLO's datasets in training,
      and every mosaic / mixup partner) this transform loads a random other
      sample of it in place (MMYOLO's ``BaseMixImageTransform`` cannot take
      a None from its ``pre_transform``: it calls ``pop`` on it); otherwise
      it returns None and mmengine's ``BaseDataset.__getitem__`` draws
      another index. After ``max_substitutes`` bad draws in a row it raises,
      naming them (the dataset is mostly broken);
    * ``on_bad='blank'`` (validation and test, where mmengine raises on a
      None sample and skipping would change the set evaluated): the image
      becomes a grey (114) one of the size the dataset recorded for it
      (``height`` / ``width`` of the data info), so the sample keeps its
      place and its ground truths count as missed; ``results['bad_image']``
      holds the reason.

    Args:
        on_bad (str): ``'skip'`` or ``'blank'``. Defaults to ``'skip'``.
        max_substitutes (int): Random other samples tried in a row.
            Defaults to 10.
        **kwargs: The arguments of mmcv's ``LoadImageFromFile``
            (``ignore_empty`` is refused: this transform decides instead).
    """

    def __init__(self,
                 on_bad: str = 'skip',
                 max_substitutes: int = 10,
                 **kwargs) -> None:
        if on_bad not in ('skip', 'blank'):
            raise ValueError(f'TolerantLoadImageFromFile: on_bad={on_bad!r} '
                             "must be 'skip' or 'blank'")
        if kwargs.get('ignore_empty'):
            raise ValueError('TolerantLoadImageFromFile: ignore_empty would '
                             'drop missing files silently; on_bad decides')
        super().__init__(**kwargs)
        self.on_bad = on_bad
        self.max_substitutes = max_substitutes

    def _read(self, filename: str) -> bytes:
        if self.file_client_args is not None:
            file_client = fileio.FileClient.infer_client(
                self.file_client_args, filename)
            return file_client.get(filename)
        return fileio.get(filename, backend_args=self.backend_args)

    def load_checked(self, filename: str):
        """The decoded image and None, or None and why the file is bad
        (``tools/analysis_tools/check_data.py`` checks every image with this)."""
        try:
            content = self._read(filename)
        except FileNotFoundError:
            return None, 'missing file'
        except Exception as e:  # any backend's read error
            return None, f'unreadable ({type(e).__name__}: {e})'
        defect = bytes_defect(content)
        if defect:
            return None, defect
        try:
            img = mmcv.imfrombytes(
                content, flag=self.color_type, backend=self.imdecode_backend)
        except Exception as e:  # a decoder's own error
            return None, f'not decodable ({type(e).__name__}: {e})'
        if img is None or img.size == 0:
            return None, 'not decodable as an image'
        return img, None

    def transform(self, results: dict):
        filename = results['img_path']
        img, reason = self.load_checked(filename)
        if reason is not None:
            if self.on_bad == 'skip':
                report_bad_image(filename, reason,
                                 'skipped (another sample takes its place)')
                dataset = results.get('dataset')
                if dataset is None:
                    return None  # BaseDataset draws another index
                img = self._substitute(results, dataset, filename)
            else:
                img = self._blank(results, filename, reason)
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def _substitute(self, results: dict, dataset, filename: str):
        """Turn ``results`` into a random other sample of ``dataset`` whose
        image loads; its image."""
        tried = [filename]
        for _ in range(self.max_substitutes):
            info = copy.deepcopy(
                dataset.get_data_info(np.random.randint(len(dataset))))
            img, reason = self.load_checked(info['img_path'])
            if reason is None:
                results.clear()
                results.update(info, dataset=dataset)
                return img
            report_bad_image(info['img_path'], reason,
                             'skipped (another sample takes its place)')
            tried.append(info['img_path'])
        raise RuntimeError(
            f'{len(tried)} bad images in a row ({", ".join(tried)}): most of '
            'the dataset cannot be loaded; list its bad files with '
            'tools/analysis_tools/check_data.py CONFIG')

    def _blank(self, results: dict, filename: str, reason: str):
        """A grey image of the size the data info records."""
        if 'height' not in results or 'width' not in results:
            raise ValueError(
                f'bad image {filename}: {reason}; and its data info has '
                "no height/width for the grey placeholder (on_bad='blank')")
        report_bad_image(filename, reason,
                         'replaced by a grey image of its recorded size')
        shape = (results['height'], results['width'])
        if self.color_type != 'grayscale':
            shape += (3, )
        results['bad_image'] = reason
        return np.full(shape, _PAD_VALUE, np.uint8)

    def __repr__(self) -> str:
        return f'{super().__repr__()[:-1]}, on_bad={self.on_bad!r})'
