"""mmyolo_ext: YOLOv7 for the OpenMMLab stack (MMEngine, MMDetection 3.x, MMYOLO)."""
import shutil
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
# What the wheel carries beside the code, as OpenMMLab packages ship them
# (mmdet/.mim, mmyolo/.mim): `_base_ = 'mmyolo_ext::yolov7_l_coco.py'` and
# `mim train mmyolo_ext ...` find them in an installed package.
MIM_FILES = ('configs', 'tools', 'model-index.yml')
MIM_DIR = ROOT / 'mmyolo_ext' / '.mim'


def read_version() -> str:
    namespace: dict = {}
    with open('mmyolo_ext/version.py') as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def add_mim_files() -> None:
    """Copy configs/, tools/ and model-index.yml into mmyolo_ext/.mim when a
    wheel or an sdist is built. An editable install reads them from the
    checkout."""
    if not {'bdist_wheel', 'sdist', 'build'} & set(sys.argv):
        return
    for name in MIM_FILES:
        target = MIM_DIR / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        if (ROOT / name).is_file():
            MIM_DIR.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
        else:
            shutil.copytree(
                ROOT / name, target,
                ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))


add_mim_files()

setup(
    name='mmyolo_ext',
    version=read_version(),
    description='YOLOv7 (ELAN backbones, IDetect heads, OTA loss) as '
    'MMEngine/MMDetection/MMYOLO registry modules',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    license='GPL-3.0',
    packages=find_packages(include=['mmyolo_ext', 'mmyolo_ext.*']),
    package_data={
        'mmyolo_ext':
        [
            '.mim/model-index.yml', '.mim/configs/**/*.py',
            '.mim/configs/**/*.yml', '.mim/tools/**/*.py', '.mim/tools/**/*.sh'
        ]
    },
    python_requires='>=3.10,<3.13',
    # The ranges that work together (see README): mmyolo 0.6 refuses
    # mmcv>=2.1, and mmdet imports mmcv.ops, so mmcv must have compiled ops
    # (tools/setup_env.sh builds mmcv 2.0.1 from its sdist).
    install_requires=[
        'torch>=2.0',
        'numpy>=2,<3',
        'mmengine>=0.10.7,<0.11',
        'mmcv>=2.0.1,<2.1',
        'mmdet>=3.3.0,<3.4',
        'mmyolo>=0.6.0,<0.7',
        'pycocotools>=2.0.8',
        'matplotlib',
    ],
    extras_require={
        'tests': ['pytest', 'psutil'],
        # tools/deployment/export_onnx.py, tools/test.py CONFIG model.onnx;
        # tools/deployment/export_openvino.py (FP32/FP16, INT8 by NNCF),
        # tools/test.py CONFIG model.xml
        'deploy': ['onnx>=1.15', 'onnxruntime>=1.17', 'onnxslim>=0.1.30',
                   'openvino>=2024.4', 'nncf>=2.13'],
    },
    classifiers=[
        'License :: OSI Approved :: GNU General Public License v3 (GPLv3)',
        'Programming Language :: Python :: 3.11',
    ],
    zip_safe=False,
)
