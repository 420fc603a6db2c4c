"""The command-line tools as modules, for tests that call their functions
in this process."""
import importlib.util
from types import ModuleType

from helpers.paths import ROOT


def load_tool(relative_path: str) -> ModuleType:
    """The tool at ``relative_path`` (e.g. ``'tools/test.py'``) as a module,
    without running its ``__main__`` block."""
    path = ROOT / relative_path
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
