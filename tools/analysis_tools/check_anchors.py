"""Autoanchor on a config's training set, without training.

    python tools/analysis_tools/check_anchors.py CONFIG [--img-size N] \\
        [--cfg-options ...]

Prints what ``AutoAnchorHook`` would do before training: the best possible
recall (BPR) of the model's anchors on the training labels, and, when it is
below 0.98, the fitted anchors and their BPR. The config's AutoAnchorHook
settings are used when it has one; --img-size defaults to its img_size, else
to the config's ``input_size`` (or ``img_scale``).
"""
import argparse
import sys

from mmengine.registry import init_default_scope

import mmyolo_ext  # noqa: F401  (registers modules)
from mmyolo_ext.engine.config_variables import load_config
from mmyolo_ext.engine.hooks.autoanchor_hook import AutoAnchorHook  # noqa
from mmyolo_ext.registry import DATASETS, MODELS
from mmyolo_ext.utils.cli import add_cfg_options


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--img-size', type=int)
    add_cfg_options(parser)
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmyolo'))
    hook_cfg = next((dict(h) for h in cfg.get('custom_hooks', [])
                     if h.get('type', '').endswith('AutoAnchorHook')), {})
    hook_cfg.pop('type', None)
    hook_cfg.pop('priority', None)
    hook_cfg['enabled'] = True
    # the recipes' training size is input_size (img_scale: the model's
    # nominal size)
    img_size = args.img_size or hook_cfg.get('img_size') or cfg.get(
        'input_size') or cfg.get('img_scale')
    if img_size is None:
        parser.error('no --img-size and the config has no AutoAnchorHook '
                     'img_size, input_size or img_scale')
    hook_cfg['img_size'] = img_size
    hook = AutoAnchorHook(**hook_cfg)
    head = MODELS.build(cfg.model).bbox_head
    result = hook.check(DATASETS.build(cfg.train_dataloader.dataset), head)
    print(f'{result.num_labels} labels at {hook.img_size} px')
    print(f'anchors        {result.anchors_before}')
    print(f'BPR            {result.bpr_before:.4f} '
          f'({result.above_before:.2f} anchors/label past the ratio rule)')
    if result.bpr_after is not None:
        print(f'fitted BPR     {result.bpr_after:.4f}')
    if result.replaced:
        print('new anchors    ' +
              str([[[round(v, 1) for v in a] for a in level]
                   for level in result.anchors_after]))
    elif result.note:
        print(result.note)
    return 0


if __name__ == '__main__':
    sys.exit(main())
