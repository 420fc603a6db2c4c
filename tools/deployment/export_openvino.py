"""Export a YOLOv7 checkpoint to an OpenVINO IR: FP32, FP16 or INT8.

Examples::

    # FP32 IR (model.xml + model.bin), the --nms none output layout
    python tools/deployment/export_openvino.py configs/yolov7_tiny_demo.py \
        epoch_12.pth --out ov/model.xml
    # INT8: NNCF post-training quantization calibrated on 300 training
    # images (the config's training set, or --calib-data data.yaml|folder)
    python tools/deployment/export_openvino.py CONFIG CKPT --out ov/int8.xml --int8
    # evaluate it with the config's dataset and metric
    python tools/test.py CONFIG ov/int8.xml

The input ``images`` is RGB in [0, 1], letterboxed outside the graph; the
output ``(1, N, 5 + nc)`` holds decoded rows in the official order (see
docs/predict_and_deploy.md).
"""
import argparse

import mmyolo_ext  # noqa: F401  (registers modules, applies the compat fixes)
from mmyolo_ext.deploy import load_detector
from mmyolo_ext.deploy.calibration import calibration_images
from mmyolo_ext.deploy.onnx_export import config_input_size
from mmyolo_ext.deploy.openvino_export import export_openvino
from mmyolo_ext.engine.config_variables import load_config
from mmyolo_ext.utils.cli import add_cfg_options, require_checkpoint_file


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='training or deploy checkpoint')
    parser.add_argument('--out', required=True, help='the IR .xml file')
    parser.add_argument(
        '--img-size',
        type=int,
        nargs='+',
        help='input height width (one value: square); default: the '
        "config's img_scale, else 640")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        '--fp16', action='store_true', help='half-precision weights')
    precision.add_argument(
        '--int8',
        action='store_true',
        help='NNCF post-training INT8 quantization (head output convs and '
        'decode kept in float)')
    parser.add_argument(
        '--calib-data',
        help="--int8: a data.yaml (its train split) or a folder / .txt list "
        "of images; default: the config's training set")
    parser.add_argument(
        '--calib-images',
        type=int,
        default=300,
        help='--int8: images to calibrate on, evenly spread over the set')
    add_cfg_options(parser)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    require_checkpoint_file(args.checkpoint)
    cfg = load_config(args.config, args.cfg_options)
    model = load_detector(cfg, args.checkpoint, deploy=True)
    try:
        img_size = config_input_size(model.cfg, args.img_size)
    except ValueError as error:
        raise SystemExit(str(error))
    precision = 'int8' if args.int8 else 'fp16' if args.fp16 else 'fp32'
    calibration = None
    if args.int8:
        calibration = calibration_images(model.cfg, img_size,
                                         args.calib_data, args.calib_images)
        print(f'calibrating on {len(calibration)} training images '
              f'({args.calib_data or "the config training set"})')
    classes = (model.dataset_meta or {}).get('classes')
    out = export_openvino(
        model,
        args.out,
        img_size=img_size,
        precision=precision,
        calibration=calibration,
        subset_size=args.calib_images,
        class_names=classes)
    print(f'exported {args.checkpoint} (re-parameterized) to {out} '
          f'({precision}): input images (1, 3, {img_size[0]}, '
          f'{img_size[1]}) RGB [0, 1], output (1, N, 5 + nc)')


if __name__ == '__main__':
    main()
