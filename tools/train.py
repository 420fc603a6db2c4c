"""Train a detector with MMEngine; the flags and behaviour of mmdet 3.3's
``tools/train.py``.

Example::

    python tools/train.py configs/yolov7_tiny_demo.py
    python tools/train.py configs/yolov7_l_coco.py --amp --resume
"""
import argparse
import logging

import torch
from mmyolo_ext.models.data_preprocessors import check_hsv_placement
from mmyolo_ext.utils.cli import (add_common_args, build_runner, load_config,
                                  parse, require_checkpoint_file)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    parser.add_argument(
        '--check-data',
        action='store_true',
        help='first list every bad image and annotation of the datasets '
        '(tools/analysis_tools/check_data.py); stop with exit code 1 if any')
    add_common_args(parser)
    return parse(parser)


def resume_checkpoint(resume: str, work_dir: str) -> tuple:
    """``(cfg.resume, cfg.load_from)`` for ``--resume [PATH]``: PATH if it
    is a complete checkpoint, else (``auto``) the newest good checkpoint of
    the work dir, each damaged one passed over with a warning; training
    starts anew where there is none."""
    from mmengine.logging import print_log

    from mmyolo_ext.engine.checkpoint_files import find_resumable_checkpoint
    if resume != 'auto':
        require_checkpoint_file(resume)
        return True, resume

    def warn(message: str) -> None:
        print_log(message, logger='current', level=logging.WARNING)

    found = find_resumable_checkpoint(work_dir, warn)
    if found is None:
        print_log(f'--resume: no complete checkpoint in {work_dir}; '
                  'training from the start', logger='current',
                  level=logging.WARNING)
        return False, None
    print_log(f'--resume: resuming from {found}', logger='current')
    return True, found


def main() -> None:
    args = parse_args()

    cfg = load_config(args)

    if args.amp:
        # our recipes' summed accumulation stays, with AMP on top of it
        summed = cfg.optim_wrapper.get('type', '').endswith(
            'SummedAccumulationOptimWrapper')
        if not summed and not torch.cuda.is_available():
            # MMEngine's AmpOptimWrapper refuses to run without a GPU; ours
            # (the recipes' summed wrapper) runs bfloat16 autocast on a CPU
            raise SystemExit(
                f'--amp with optim_wrapper type '
                f'{cfg.optim_wrapper.get("type", "OptimWrapper")!r} needs '
                'CUDA (fp16 with a GradScaler); on a CPU only the recipes\' '
                'SummedAccumulationOptimWrapper runs it, as bfloat16')
        cfg.optim_wrapper.type = (
            'mmyolo_ext.AmpSummedAccumulationOptimWrapper'
            if summed else 'AmpOptimWrapper')
        cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and 'enable' in cfg.auto_scale_lr and \
                'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise RuntimeError('Can not find "auto_scale_lr" or '
                               '"auto_scale_lr.enable" or '
                               '"auto_scale_lr.base_batch_size" in your'
                               ' configuration file.')

    # an explicit checkpoint wins over auto-resume from the work dir; both
    # only take a complete checkpoint file (a config's resume=True too)
    resume = args.resume
    if resume is None and cfg.get('resume', False):
        resume = cfg.get('load_from') or 'auto'
    if resume is not None:
        cfg.resume, cfg.load_from = resume_checkpoint(resume, cfg.work_dir)

    if args.check_data:
        from mmyolo_ext.datasets import data_check
        reports = data_check.check_config(cfg)
        print(data_check.format_report(reports))
        if data_check.count_problems(reports):
            raise SystemExit('--check-data: bad images or annotations '
                             '(listed above); fix them or train without '
                             '--check-data (bad images are then skipped)')

    # HSV gains the pipeline leaves to the model must reach it
    check_hsv_placement(cfg)
    runner = build_runner(cfg)
    runner.train()


if __name__ == '__main__':
    main()
