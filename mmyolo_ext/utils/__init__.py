"""What the command-line tools and benchmarks share (:mod:`.cli`) and where
the package finds its own configs (:mod:`.package_files`)."""
from .package_files import config_path, register_config_package

__all__ = ['config_path', 'register_config_package']
