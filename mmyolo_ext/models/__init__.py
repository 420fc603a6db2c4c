from . import (backbones, data_preprocessors, dense_heads,  # noqa: F401
               detectors, layers, losses, necks, task_modules)
