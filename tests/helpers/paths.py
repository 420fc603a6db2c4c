"""Where the tests find the repository, their data and the reference vectors."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_DATA = ROOT / 'tests' / 'data'
MANIFESTS = TEST_DATA / 'manifests'
# the official YOLOv7 outputs, beside the repository (../shared)
VECTORS = ROOT.parent / 'shared' / 'reference' / 'vectors'
# the toy runner and modules, importable by the subprocesses of the tests
TOY = ROOT / 'tests' / 'helpers'
