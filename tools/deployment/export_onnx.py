"""Export a YOLOv7 checkpoint to ONNX (always the re-parameterized model).

Examples::

    # decoded outputs (bs, N, 5 + nc), the official --grid layout
    python tools/deployment/export_onnx.py configs/yolov7_tiny_demo.py epoch_12.pth \
        --out tiny.onnx --img-size 320 320
    # NMS in the graph: onnxruntime (ONNX NonMaxSuppression) / TensorRT
    python tools/deployment/export_onnx.py CONFIG CKPT --out e2e.onnx --nms onnx
    python tools/deployment/export_onnx.py CONFIG CKPT --out trt.onnx --nms trt
    # for tools/test.py CONFIG model.onnx (rect batches of varying shapes)
    python tools/deployment/export_onnx.py CONFIG CKPT --out eval.onnx --dynamic all

The input ``images`` is RGB in [0, 1], letterboxed outside the graph (see
the README's "Export to ONNX").
"""
import argparse


import mmyolo_ext  # noqa: F401  (registers modules, applies the compat fixes)
from mmyolo_ext.engine.config_variables import load_config
from mmyolo_ext.utils.cli import add_cfg_options, require_checkpoint_file
from mmyolo_ext.deploy import load_detector
from mmyolo_ext.deploy.onnx_export import (NMS_MODES, config_input_size,
                                           export_onnx)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='training or deploy checkpoint')
    parser.add_argument('--out', required=True, help='the .onnx file')
    parser.add_argument(
        '--img-size',
        type=int,
        nargs='+',
        help='input height width (one value: square), multiples of the '
        "stride; default: the config's img_scale, else 640")
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument(
        '--dynamic',
        choices=['batch', 'all'],
        help='dynamic batch, or batch, height and width')
    parser.add_argument(
        '--nms',
        choices=NMS_MODES,
        default='none',
        help='none: decoded (bs, N, 5 + nc); onnx: NonMaxSuppression '
        '(onnxruntime); trt: EfficientNMS_TRT (TensorRT)')
    parser.add_argument('--conf-thres', type=float, default=0.25)
    parser.add_argument('--iou-thres', type=float, default=0.45)
    parser.add_argument('--max-det', type=int, default=100)
    parser.add_argument(
        '--fp16', action='store_true', help='half weights and input')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument(
        '--simplify',
        action='store_true',
        help='simplify the graph with onnxslim (or onnxsim)')
    parser.add_argument('--device', default='cpu', help='device to trace on')
    add_cfg_options(parser)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    require_checkpoint_file(args.checkpoint)
    model = load_detector(
        load_config(args.config, args.cfg_options),
        args.checkpoint,
        device=args.device,
        deploy=True)
    try:
        img_size = config_input_size(model.cfg, args.img_size)
    except ValueError as error:
        raise SystemExit(str(error))
    classes = (model.dataset_meta or {}).get('classes')
    out = export_onnx(
        model,
        args.out,
        img_size=img_size,
        batch_size=args.batch_size,
        dynamic=args.dynamic,
        nms=args.nms,
        conf_thres=args.conf_thres,
        iou_thres=args.iou_thres,
        max_det=args.max_det,
        fp16=args.fp16,
        opset=args.opset,
        simplify=args.simplify,
        device=args.device,
        class_names=classes)
    print(f'exported {args.checkpoint} (re-parameterized) to {out}: input '
          f'images ({args.batch_size}, 3, {img_size[0]}, {img_size[1]})'
          f'{" dynamic " + args.dynamic if args.dynamic else ""}, '
          f'nms {args.nms}{", fp16" if args.fp16 else ""}')


if __name__ == '__main__':
    main()
