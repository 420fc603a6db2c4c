"""mmyolo_ext: YOLOv7 for the OpenMMLab stack (MMEngine, MMDetection 3.x, MMYOLO)."""
from setuptools import find_packages, setup


def read_version() -> str:
    namespace: dict = {}
    with open('mmyolo_ext/version.py') as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='mmyolo_ext',
    version=read_version(),
    description='YOLOv7 (ELAN backbones, IDetect heads, OTA loss) as '
    'MMEngine/MMDetection/MMYOLO registry modules',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    license='GPL-3.0',
    packages=find_packages(include=['mmyolo_ext', 'mmyolo_ext.*']),
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
        # tools/deployment/export_onnx.py, tools/test.py CONFIG model.onnx
        'deploy': ['onnx>=1.15', 'onnxruntime>=1.17', 'onnxslim>=0.1.30'],
    },
    classifiers=[
        'License :: OSI Approved :: GNU General Public License v3 (GPLv3)',
        'Programming Language :: Python :: 3.11',
    ],
    zip_safe=False,
)
