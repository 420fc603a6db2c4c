"""Test (evaluate) a detector with MMEngine; the flags and behaviour of
mmdet 3.3's ``tools/test.py``, plus ``--deploy`` to evaluate the
re-parameterized model (RepConv and BN folded, implicit layers folded, P6 aux
head removed).

Example::

    python tools/test.py configs/yolov7_l_coco.py yolov7_l.pth --deploy
"""
import argparse

from mmengine.config import Config

from _cli import add_common_args, build_runner, load_config, parse


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        type=str,
        help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. '
        'If specified, it will be automatically saved '
        'to the work_dir/timestamp/show_dir')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--deploy',
        action='store_true',
        help='re-parameterize the model after loading the checkpoint '
        '(mmyolo_ext.deploy.reparameterize) and evaluate the fused model')
    add_common_args(parser)
    return parse(parser)


def trigger_visualization_hook(cfg: Config,
                               args: argparse.Namespace) -> Config:
    """Switch on mmdet's DetVisualizationHook for --show / --show-dir."""
    default_hooks = cfg.default_hooks
    if 'visualization' not in default_hooks:
        raise RuntimeError(
            'VisualizationHook must be included in default_hooks. '
            'refer to usage '
            '"visualization=dict(type=\'VisualizationHook\')"')
    visualization_hook = default_hooks['visualization']
    visualization_hook['draw'] = True
    if args.show:
        visualization_hook['show'] = True
        visualization_hook['wait_time'] = args.wait_time
    if args.show_dir:
        visualization_hook['test_out_dir'] = args.show_dir
    return cfg


def main() -> None:
    args = parse_args()

    cfg = load_config(args)
    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)

    if args.deploy:
        # runs before the test loop, after the checkpoint is loaded
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
            dict(type='mmyolo_ext.ReparameterizeHook')
        ]

    runner = build_runner(cfg)

    if args.out is not None:
        assert args.out.endswith(('.pkl', '.pickle')), \
            'The dump file must be a pkl file.'
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(
            DumpDetResults(out_file_path=args.out))

    runner.test()


if __name__ == '__main__':
    main()
