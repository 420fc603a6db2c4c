"""See what the label assigner does with your labels.

    python tools/analysis_tools/visualize_assignment.py CONFIG \\
        [--checkpoint CKPT] [--num-images N] --out-dir DIR

For the first N samples of the training set after the train pipeline
(mosaic and all), writes DIR/<n>_<image name>.png: per level one panel with
the ground-truth boxes, each positive cell filled with its ground truth's
colour and the matched anchors drawn around the cell centres (a second row
for the auxiliary head of P6 models). DIR/summary.json and the printed
table give the positives per ground truth, head and level, and the ground
truths that got none.

With --checkpoint the positives are OTA's choice from that model's
predictions (the model's own loss assignment); without, the candidate rule
(YOLOv5Assigner: every anchor-ratio candidate cell). The assignment is the
training loss's own (``ComputeLossOTA(..., return_assignment=True)``).
"""
import argparse
import json
import os
import os.path as osp
import sys

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, load_checkpoint

import mmyolo_ext  # noqa: F401  (registers modules)
from mmyolo_ext.engine.config_variables import load_config
from mmyolo_ext.analysis import assignment_view as view
from mmyolo_ext.registry import MODELS
from mmyolo_ext.utils.cli import add_cfg_options


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='draw and count the positives of the label assigner')
    parser.add_argument('config', help='training config')
    parser.add_argument('--checkpoint', help='assign from this model\'s '
                        'predictions (default: the candidate rule)')
    parser.add_argument('--num-images', type=int, default=4)
    parser.add_argument('--out-dir', required=True)
    add_cfg_options(parser)
    return parser.parse_args(argv)


def build_loader(cfg: Config):
    """The train dataloader, one sample per batch, in dataset order."""
    loader_cfg = cfg.train_dataloader.copy()
    loader_cfg.update(
        batch_size=1,
        num_workers=0,
        persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=False))
    loader_cfg.pop('batch_sampler', None)
    return Runner.build_dataloader(loader_cfg, seed=0)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmyolo'))
    model = MODELS.build(cfg.model)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    model.train()
    os.makedirs(args.out_dir, exist_ok=True)
    summaries = {}
    loader = build_loader(cfg)
    for n, data_batch in enumerate(loader):
        if n >= args.num_images:
            break
        assignment, inputs = view.assign_batch(
            model, data_batch, use_predictions=bool(args.checkpoint))
        # the sampler keeps the dataset order: sample n is (or, in a
        # mosaic, starts from) image n
        info = loader.dataset.get_data_info(n)
        stem = osp.splitext(osp.basename(info.get('img_path', str(n))))[0]
        name = f'{n:03d}_{stem}'
        view.write_png(
            osp.join(args.out_dir, name + '.png'),
            view.draw_image(inputs, model.data_preprocessor, assignment, 0))
        summaries[name] = view.image_summary(assignment, 0)
        print(view.format_summary(name, summaries[name]))
    with open(osp.join(args.out_dir, 'summary.json'), 'w') as f:
        json.dump(summaries, f, indent=1)
    print(f'wrote {len(summaries)} images and summary.json to '
          f'{args.out_dir}')
    return 0


if __name__ == '__main__':
    with torch.no_grad():
        sys.exit(main())
