from . import (backbones, dense_heads, detectors, layers, losses,  # noqa: F401
               necks, task_modules)
