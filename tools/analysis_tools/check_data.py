"""List every bad image and annotation of a config's datasets.

Example::

    python tools/analysis_tools/check_data.py configs/yolov7_tiny_demo.py
    python tools/analysis_tools/check_data.py CONFIG --cfg-options data_yaml=data/x/data.yaml

Each image of the train / val / test datasets is read and decoded (missing,
empty, truncated, undecodable files; a size that differs from the
annotations'), and the annotations are checked (COCO json: boxes that
``CocoDataset`` would drop or that leave their image; YOLO layout: every bad
label row with file and line, dropped duplicates). Prints the list and a
summary; the exit code is 1 when anything is bad, else 0.
"""
import argparse
import sys


import mmyolo_ext  # noqa: F401  (registers modules)
from mmyolo_ext.datasets.data_check import (LOADERS, check_config,
                                            count_problems, format_report)
from mmyolo_ext.engine.config_variables import load_config
from mmyolo_ext.utils.cli import add_cfg_options


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--loaders',
        nargs='+',
        default=list(LOADERS),
        choices=list(LOADERS),
        help='which dataloaders\' datasets to check (default: all)')
    add_cfg_options(parser)
    args = parser.parse_args()
    cfg = load_config(args.config, args.cfg_options)
    reports = check_config(cfg, args.loaders)
    print(format_report(reports))
    return 1 if count_problems(reports) else 0


if __name__ == '__main__':
    sys.exit(main())
