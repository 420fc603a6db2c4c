"""Test (evaluate) a detector with MMEngine; the flags and behaviour of
mmdet 3.3's ``tools/test.py``, plus ``--deploy`` to evaluate the
re-parameterized model (RepConv and BN folded, implicit layers folded, P6 aux
head removed); a ``.onnx`` checkpoint (``tools/deployment/export_onnx.py --nms none``,
``--dynamic all`` for rect batches) is evaluated in onnxruntime, an OpenVINO
``.xml`` IR (``tools/deployment/export_openvino.py``) on OpenVINO's CPU plugin.

Example::

    python tools/test.py configs/yolov7_l_coco.py yolov7_l.pth --deploy
    python tools/test.py configs/yolov7_l_coco.py yolov7_l.onnx
"""
import argparse

from mmengine.config import Config, ConfigDict

from mmyolo_ext.deploy import is_deploy_checkpoint
from mmyolo_ext.utils.cli import (add_common_args, build_runner, load_config,
                                  parse, require_checkpoint_file)


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
        '(mmyolo_ext.deploy.reparameterize) and evaluate the fused model; a '
        'deploy checkpoint (tools/model_converters/reparameterize.py) needs no flag')
    parser.add_argument(
        '--tta',
        action='store_true',
        help="test-time augmentation: the config's tta_model around its "
        'model (default: the official test.py --augment passes, '
        'YOLOv7TTAModel) and its tta_pipeline (default: the test pipeline)')
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


def use_tta_model(cfg: Config) -> Config:
    """Wrap the model in ``cfg.tta_model`` and test with ``cfg.tta_pipeline``
    (mmdet 3.3's ``--tta``); the official passes when the config has none.

    EMA hooks leave the run: the checkpoint's state_dict already holds the
    EMA weights, and an EMA copy of the wrapped model would not receive
    them (its keys gain the wrapper's ``module.`` prefix).
    """
    tta_model = cfg.get('tta_model', dict(type='mmyolo_ext.YOLOv7TTAModel'))
    cfg.model = ConfigDict(**tta_model, module=cfg.model)
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:
        dataset = dataset['dataset']
    dataset.pipeline = cfg.get('tta_pipeline', dataset.pipeline)
    return drop_ema_hooks(cfg)


def drop_ema_hooks(cfg: Config) -> Config:
    """``cfg`` without its EMA hooks (a wrapped or exported model has no
    EMA copy to swap in; the checkpoint's state_dict is the EMA one)."""
    from mmengine.hooks import EMAHook
    from mmengine.registry import HOOKS
    with HOOKS.switch_scope_and_registry(
            cfg.get('default_scope')) as registry:
        cfg.custom_hooks = [
            hook for hook in cfg.get('custom_hooks', [])
            if not (isinstance(hook['type'], str) and issubclass(
                registry.get(hook['type']) or object, EMAHook))
        ]
    return cfg


def main() -> None:
    args = parse_args()
    require_checkpoint_file(args.checkpoint)

    cfg = load_config(args)
    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)

    if args.tta:
        cfg = use_tta_model(cfg)

    if args.checkpoint.endswith('.onnx'):
        # an export (tools/deployment/export_onnx.py --nms none) run in onnxruntime
        from mmyolo_ext.deploy.onnxruntime_detector import onnx_test_config
        if args.tta or args.deploy:
            raise SystemExit('--tta / --deploy take a PyTorch checkpoint, '
                             f'not {args.checkpoint}')
        cfg = drop_ema_hooks(onnx_test_config(cfg, args.checkpoint))
    elif args.checkpoint.endswith('.xml'):
        # an OpenVINO IR (tools/deployment/export_openvino.py) run on its CPU
        # plugin
        from mmyolo_ext.deploy.openvino_detector import openvino_test_config
        if args.tta or args.deploy:
            raise SystemExit('--tta / --deploy take a PyTorch checkpoint, '
                             f'not {args.checkpoint}')
        cfg = drop_ema_hooks(openvino_test_config(cfg, args.checkpoint))

    # a deploy checkpoint (tools/model_converters/reparameterize.py) holds fused weights: the
    # model is fused before the runner loads them; --deploy fuses the loaded
    # training weights before the test loop
    deploy_weights = (not args.checkpoint.endswith(('.onnx', '.xml'))
                      and is_deploy_checkpoint(args.checkpoint))
    if args.deploy or deploy_weights:
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
            dict(
                type='mmyolo_ext.ReparameterizeHook',
                before_load=deploy_weights)
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
