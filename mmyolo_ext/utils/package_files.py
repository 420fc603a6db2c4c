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
    """Let mmengine configs inherit ours as ``'mmyolo_ext::<config>'``.

    mmengine resolves ``'pkg::path'`` only for a config in a sub-folder of
    an installed package's ``.mim/configs`` (``'mmdet::faster_rcnn/x.py'``),
    and scopes every dict of such a base to ``pkg``. Ours sit at the top of
    configs/ and are written for MMYOLO's scope (their ``default_scope``),
    so our prefix is resolved here, in front of mmengine's resolution, to
    the config file (packaged or in the checkout) read as a local base: the
    dicts keep the scope of the config. Every other name is mmengine's.
    """
    from mmengine.config import Config
    resolve = Config._get_cfg_path
    if getattr(resolve, 'reads_mmyolo_ext', False):
        return

    def get_cfg_path(cfg_path: str, filename: str):
        package, sep, name = cfg_path.partition('::')
        if package == 'mmyolo_ext' and sep:
            return config_path(name), None
        return resolve(cfg_path, filename)

    get_cfg_path.reads_mmyolo_ext = True
    Config._get_cfg_path = staticmethod(get_cfg_path)
