"""mmyolo_ext: YOLOv7 for MMEngine, MMDetection 3.x and MMYOLO.

``import mmyolo_ext`` (or ``custom_imports=dict(imports=['mmyolo_ext'])`` in a
config) registers every module of the package, lets configs name ours as
``'mmyolo_ext::<config>'``, and applies narrow fixes to mmengine 0.10.7 on
today's torch (see :mod:`mmyolo_ext.engine.compat`).
"""
from .version import __version__
from .engine import compat  # noqa: F401  (applies the fixes on import)
from . import datasets, demo_data, engine, models  # noqa: F401  (registers)
from .registry import export_to_peer_scopes
from .utils import register_config_package

export_to_peer_scopes()
register_config_package()

__all__ = ['__version__']
