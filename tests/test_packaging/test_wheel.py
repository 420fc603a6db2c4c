"""The wheel carries its configs and tools (``mmyolo_ext/.mim``, as
OpenMMLab packages ship theirs): installed without the source tree, a user's
config inherits ours through the ``mmyolo_ext::`` scope and trains from it
with the packaged tools."""
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest

from helpers.paths import ROOT


def _source_copy(dst):
    """The checkout's files (tracked and new, not ignored) in ``dst``: the
    build writes into its source folder, and must not leave a .mim copy in
    the checkout."""
    files = subprocess.run(
        ['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT,
        capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dst / name)


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """A wheel built from the checkout and installed into a bare folder."""
    if shutil.which('git') is None or not (ROOT / '.git').exists():
        pytest.skip('needs the git checkout to list its files')
    tmp = tmp_path_factory.mktemp('wheel')
    source, dist, target = tmp / 'src', tmp / 'dist', tmp / 'site'
    source.mkdir()
    _source_copy(source)
    subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
         '--no-build-isolation', '-w', str(dist), str(source)],
        check=True, capture_output=True)
    wheel = next(dist.glob('mmyolo_ext-*.whl'))
    subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
         '--no-index', '--target', str(target), str(wheel)],
        check=True, capture_output=True)
    return wheel, target, tmp


def test_wheel_lists_configs_and_tools(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (ROOT / 'configs').rglob('*.py'):
        rel = path.relative_to(ROOT).as_posix()
        assert f'mmyolo_ext/.mim/{rel}' in names, rel
    for rel in ('tools/train.py', 'tools/test.py', 'tools/dist_train.sh',
                'tools/deployment/export_onnx.py'):
        assert f'mmyolo_ext/.mim/{rel}' in names, rel
    assert not any('__pycache__' in n for n in names)


def test_installed_package_trains_a_config_through_its_scope(installed):
    _, target, tmp = installed
    work = tmp / 'user'
    work.mkdir()
    # a user's own config, outside any checkout, on the demo recipe: four
    # small generated images, one epoch of two iterations, no validation
    (work / 'my_demo.py').write_text(textwrap.dedent("""
        _base_ = 'mmyolo_ext::yolov7_tiny_demo.py'
        data_root = 'shapes/'
        train_dataloader = dict(
            batch_size=2, num_workers=0, persistent_workers=False,
            dataset=dict(data_root=data_root,
                         generate=dict(num_train=4, num_val=2, img_size=64)))
        val_dataloader = None
        val_evaluator = None
        val_cfg = None
        train_cfg = dict(max_epochs=1, val_interval=2)
        default_hooks = dict(
            checkpoint=dict(interval=1, save_best=None),
            param_scheduler=dict(max_epochs=1))
    """))
    env = dict(os.environ, PYTHONPATH=str(target), OMP_NUM_THREADS='1',
               PYTHONNOUSERSITE='1')
    # the package is the installed copy, its config the packaged one
    probe = subprocess.run(
        [sys.executable, '-c', textwrap.dedent("""
            import mmyolo_ext, sys
            from mmengine.config import Config
            from mmyolo_ext.utils import config_path
            cfg = Config.fromfile('my_demo.py')
            print(mmyolo_ext.__file__)
            print(config_path('yolov7_tiny_demo.py'))
            print(cfg.model.bbox_head.type, cfg.max_epochs)
        """)], cwd=work, env=env, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr[-3000:]
    package_file, demo_config, model_line = probe.stdout.split('\n')[-4:-1]
    assert package_file.startswith(str(target))
    assert demo_config == str(
        target / 'mmyolo_ext' / '.mim' / 'configs' / 'yolov7_tiny_demo.py')
    assert model_line.startswith('IDetectHead')

    train = subprocess.run(
        [sys.executable,
         str(target / 'mmyolo_ext' / '.mim' / 'tools' / 'train.py'),
         'my_demo.py', '--work-dir', 'work'],
        cwd=work, env=env, capture_output=True, text=True)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-3000:]
    assert (work / 'work' / 'epoch_1.pth').is_file()
