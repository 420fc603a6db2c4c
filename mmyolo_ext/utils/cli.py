"""What the tools share: mmdet 3.3's ``--cfg-options`` and launcher flags,
the config they produce (config variables replaced, see
:mod:`mmyolo_ext.engine.config_variables`), and the runner built from it."""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmyolo_ext  # noqa: F401  (registers modules, applies the compat fixes)
from mmyolo_ext.engine.config_variables import \
    load_config as load_config_with_variables


def add_cfg_options(parser: argparse.ArgumentParser) -> None:
    """mmdet's --cfg-options; a plain name (``img_scale=...``) replaces the
    config variable of that name, so what the configs derive from it
    follows."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config: key=value pairs; a plain '
        'name such as data_yaml=... or max_epochs=... replaces that config '
        'variable (what the config derives from it follows), a dotted key '
        'is merged into the config as mmdet does')


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """--cfg-options, --launcher and the launcher's --local-rank."""
    add_cfg_options(parser)
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_config(args: argparse.Namespace) -> Config:
    """The config with the launcher, --cfg-options and the work dir (CLI >
    config > ./work_dirs/<config name>) applied."""
    # a plain --cfg-options name (img_scale=..., max_epochs=...) replaces
    # the variable where the config files define it, so what they derive
    # from it follows; dotted keys are merged as mmengine does
    cfg = load_config_with_variables(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


EXPORTED_MODEL_SUFFIXES = ('.onnx', '.xml', '.bin', '.engine', '.trt')


def require_checkpoint_file(path: str) -> None:
    """Exit with a clear message where the local PyTorch checkpoint file
    ``path`` is truncated or no checkpoint: the file, its size, and the
    newest good checkpoint beside it. URLs are left to their loader, and
    exported models (ONNX, OpenVINO, TensorRT) to their runtimes."""
    from mmyolo_ext.engine.checkpoint_files import (
        DamagedCheckpointError, check_checkpoint_file,
        damaged_checkpoint_message)
    if '://' in str(path) or str(path).endswith(EXPORTED_MODEL_SUFFIXES):
        return
    try:
        check_checkpoint_file(str(path))
    except DamagedCheckpointError as error:
        raise SystemExit(damaged_checkpoint_message(str(path), error))


def build_runner(cfg: Config) -> Runner:
    """mmengine's Runner, or the config's ``runner_type``."""
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)
