"""Write a deploy checkpoint: the re-parameterized (fused) model's weights.

RepConv branches, BatchNorm and the implicit layers are folded and the P6
auxiliary head is dropped (:func:`mmyolo_ext.deploy.reparameterize`); the
EMA weights are used when the checkpoint has them. The result is marked as
deploy in its meta (``meta['mmyolo_ext']['deploy']``), so ``tools/test.py``,
``tools/deployment/image_demo.py`` and the exporter load it into a fused model with no
flag.

Example::

    python tools/model_converters/reparameterize.py configs/yolov7_tiny_demo.py \\
        work_dirs/yolov7_tiny_demo/epoch_12.pth yolov7_tiny_demo_deploy.pth
"""
import argparse
import os
import os.path as osp

import torch

from mmyolo_ext.engine.config_variables import load_config
from mmyolo_ext.utils.cli import add_cfg_options, require_checkpoint_file
from mmyolo_ext.deploy import (is_deploy_checkpoint, load_detector,
                               read_checkpoint)
from mmyolo_ext.deploy.checkpoint import deploy_checkpoint


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Save the re-parameterized model as a deploy checkpoint')
    parser.add_argument('config', help='config file of the model')
    parser.add_argument('checkpoint', help='training checkpoint')
    parser.add_argument('out', help='deploy checkpoint to write (.pth)')
    parser.add_argument(
        '--weights',
        choices=['ema', 'model'],
        default='ema',
        help="'ema' (default): the EMA weights where the checkpoint has "
        "them (MMEngine's EMAHook saves them as state_dict); 'model': the "
        'raw training weights')
    add_cfg_options(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    require_checkpoint_file(args.checkpoint)
    ckpt = read_checkpoint(args.checkpoint)
    if is_deploy_checkpoint(ckpt):
        raise SystemExit(f'{args.checkpoint} is already a deploy checkpoint')
    has_ema = 'ema_state_dict' in ckpt
    model = load_detector(
        load_config(args.config, args.cfg_options),
        ckpt,
        deploy=True,
        weights=args.weights)
    weights = 'ema' if has_ema and args.weights == 'ema' else 'model'
    out = deploy_checkpoint(
        model,
        source=ckpt,
        weights=weights,
        source_checkpoint=osp.abspath(args.checkpoint))
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    torch.save(out, args.out)
    num_params = sum(v.numel() for v in out['state_dict'].values()
                     if v.is_floating_point())
    print(f'{args.out}: deploy checkpoint ({weights} weights'
          f'{"" if has_ema else "; the checkpoint has no EMA"}), '
          f'{len(out["state_dict"])} tensors, {num_params:,} values')


if __name__ == '__main__':
    main()
