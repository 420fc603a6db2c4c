"""Convert an official YOLOv7 checkpoint into one our configs ``load_from``.

Usage::

    python tools/model_converters/convert_yolov7_weights.py yolov7-tiny.pt yolov7_tiny_mm.pth
    python tools/model_converters/convert_yolov7_weights.py SRC DST --arch e6e --config my.py

SRC: an official checkpoint (``yolov7*.pt`` / ``*_training.pt``, loaded
without the official code) or a file holding an official state dict. The
architecture is detected from its layers unless ``--arch`` is given; the
number of classes is read from the head. DST holds ``state_dict`` (our keys)
and ``meta``.
"""
import argparse
import functools
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope


from mmyolo_ext.utils import config_path
from mmyolo_ext.deploy.official_weights import (
    ConversionReport, convert_official_state_dict, load_official_state_dict,
    official_layers)

ARCHS = ('tiny', 'l', 'x', 'w6', 'e6', 'd6', 'e6e')
BASE_CONFIG = '_base_/models/yolov7_{arch}.py'


def num_classes_of(official: Dict[str, torch.Tensor]) -> int:
    """Number of classes, from the first lead conv of the detect layer."""
    last = next(reversed(official_layers(official).values()))
    anchors = last.get('anchors')
    num_anchors = anchors.shape[1] if anchors is not None else 3
    weight = last.get('m.0.weight')
    if weight is None:
        raise ValueError('no detect layer (m.0.weight) in the last layer')
    return weight.shape[0] // num_anchors - 5


@functools.lru_cache(maxsize=None)
def build_model(config: str, num_classes: int) -> nn.Module:
    """Build a model from ``config`` on the meta device (no memory). Cached:
    the conversion only reads the model's structure."""
    import mmyolo_ext  # noqa: F401  (registers our modules)
    from mmyolo.registry import MODELS
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmyolo'))
    head = cfg.model.bbox_head
    head.head_module.num_classes = num_classes
    head.loss = None  # not needed to hold weights
    with torch.device('meta'):
        return MODELS.build(cfg.model)


def detect_and_convert(
        official: Dict[str, torch.Tensor],
        arch: Optional[str] = None,
        config: Optional[str] = None) -> Tuple[dict, str, ConversionReport]:
    """Map an official state dict onto our model of ``arch`` (detected from
    the layers when None: the first architecture whose layers and shapes
    all fit) or of ``config``.

    Returns:
        tuple[dict, str, ConversionReport]: our state dict, the arch name
        and the conversion report.
    """
    num_classes = num_classes_of(official)
    if config is not None:
        candidates = [(arch or 'custom', config)]
    else:
        archs = [arch] if arch else ARCHS
        candidates = [(a, config_path(BASE_CONFIG.format(arch=a)))
                      for a in archs]
    errors = []
    for name, cfg_path in candidates:
        model = build_model(cfg_path, num_classes)
        try:
            state_dict, report = convert_official_state_dict(official, model)
        except ValueError as error:
            errors.append(f'{name}: {error}')
            continue
        return state_dict, name, report
    raise ValueError('the checkpoint fits no YOLOv7 architecture:\n  ' +
                     '\n  '.join(errors))


def convert(src: str,
            arch: Optional[str] = None,
            config: Optional[str] = None) -> Tuple[dict, str,
                                                    ConversionReport]:
    """Convert the file ``src``; returns (checkpoint dict, arch, report)."""
    official = load_official_state_dict(src)
    state_dict, name, report = detect_and_convert(official, arch, config)
    checkpoint = dict(
        state_dict=state_dict,
        meta=dict(
            source=str(src),
            arch=name,
            num_classes=num_classes_of(official),
            official_kind='training' if report.has_implicit else 'deploy'))
    return checkpoint, name, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='official checkpoint or state dict')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument('--arch', choices=ARCHS, help='skip detection')
    parser.add_argument(
        '--config', help='build the model from this config instead of '
        f'configs/{BASE_CONFIG}')
    args = parser.parse_args()
    checkpoint, arch, report = convert(args.src, args.arch, args.config)
    torch.save(checkpoint, args.dst)
    meta = checkpoint['meta']
    print(f'{args.src}: yolov7 {arch} ({meta["official_kind"]} checkpoint, '
          f'{meta["num_classes"]} classes, {report.num_layers} layers) -> '
          f'{args.dst}')
    if report.filled_identity:
        print('  no implicit layers in the source: '
              f'{len(report.filled_identity)} ImplicitA/M tensors set to '
              'identity (0 / 1)')
    if report.expanded_fused:
        print(f'  {len(report.expanded_fused)} layers stored fused were '
              'expanded (identity BatchNorm, RepConv kernel in its 3x3 '
              'branch): same outputs, trainable structure')
    if report.missing_aux:
        print(f'  no auxiliary head in the source: {len(report.missing_aux)} '
              'aux-head keys will be missing when loading (fine for '
              'inference; training starts that head from scratch):')
        for key in report.missing_aux:
            print(f'    {key}')
    if report.anchors_match is False:
        print(f'  note: the checkpoint anchors {report.anchors_px} differ '
              'from the config; the converted checkpoint keeps them '
              '(bbox_head.anchor_sizes, used on load)')


if __name__ == '__main__':
    main()
