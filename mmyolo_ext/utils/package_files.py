"""The configs (and tools) that ship with mmyolo_ext.

An installed wheel carries them in ``mmyolo_ext/.mim/`` (the OpenMMLab
convention, so ``_base_ = 'mmyolo_ext::yolov7_l_coco.py'`` and ``mim``
find them); a source checkout has them at the repository root.
"""
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def mim_dir() -> Path:
    """``mmyolo_ext/.mim`` when the package carries its files, else the
    repository root of a source checkout."""
    mim = PACKAGE_DIR / '.mim'
    return mim if (mim / 'configs').is_dir() else PACKAGE_DIR.parent


def config_path(name: str) -> str:
    """The path of one of our configs, e.g. ``'yolov7_tiny_demo.py'`` or
    ``'_base_/models/yolov7_l.py'``.

    Raises:
        FileNotFoundError: No such config ships with the package.
    """
    path = mim_dir() / 'configs' / name
    if not path.is_file():
        raise FileNotFoundError(
            f'{name} is not one of the configs of mmyolo_ext ({path} does '
            'not exist)')
    return str(path)


def register_config_package() -> None:
    """Let mmengine configs name ours as ``'mmyolo_ext::<config>'`` (mmengine
    resolves that prefix only for the packages in its ``MODULE2PACKAGE``)."""
    from mmengine.config.utils import MODULE2PACKAGE
    MODULE2PACKAGE.setdefault('mmyolo_ext', 'mmyolo_ext')
