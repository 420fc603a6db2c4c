"""Validate the recipe for users' data (``configs/yolov7_tiny_custom.py``)
against the demo recipe and MMYOLO's yolov7-tiny COCO recipe, in one run.

No real dataset is at hand, so the data is the one-class shifted shapes set
(:mod:`mmyolo_ext.demo_data.shifted_shapes`: 58 training images, a validation
split with other backgrounds, colours, sizes and counts), where a recipe
that merely fits its training images cannot look good. Each run trains
yolov7-tiny at 320 px for the same number of epochs and is evaluated on the
validation split (COCO bbox mAP):

* ``demo``: ``configs/yolov7_tiny_demo.py`` (COCO json);
* ``mmyolo``: MMYOLO 0.6's ``yolov7_tiny_syncbn_fast_8x16b-300e_coco.py``
  (COCO json), the peer;
* ``custom``: the custom recipe as it is (Adam, the non-OTA assigner from
  scratch), YOLO layout;
* ``custom_official``: the same with the official train.py's warm-up (at
  least 1000 iterations) and nominal batch 64, where the recipe adapts both
  to small data;
* ``custom_ota``, ``custom_sgd_ota``: with OTA (``ota=True``), and with
  hyp.scratch.custom's SGD and OTA (``adam=False ota=True``);
* ``custom_finetune``, ``custom_no_ota_finetune``, ``custom_sgd_finetune``:
  fine-tuned from a 3-class checkpoint of other data (``--finetune-from``;
  default ``pretrain_yolo``'s; the class channels re-initialized for 1
  class): the recipe as it is (OTA when fine-tuning), without OTA, with SGD;
* ``pretrain_yolo`` / ``pretrain_coco``: the custom recipe on the demo's
  shapes data (3 classes, 480 images) in the YOLO layout and as COCO json:
  the two formats must reach the same mAP.

Runs go as ``tools/train.py`` subprocesses, ``--jobs`` at a time with
``--threads`` each; results go to ``<work-dir>/results_<time>.json`` and a
table.

Usage::

    python benchmarks/custom_recipe.py --jobs 2 --threads 1
    python benchmarks/custom_recipe.py --runs custom demo --epochs 30
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]

from mmyolo_ext.demo_data.shifted_shapes import (
    CLASS_NAME, generate_shifted_shapes)
from mmyolo_ext.demo_data.synthetic_shapes import (
    SHAPE_CLASSES, export_yolo_layout, generate_shapes_dataset)

MMYOLO_CONFIG = 'yolov7/yolov7_tiny_syncbn_fast_8x16b-300e_coco.py'
RUN_ORDER = ('pretrain_yolo', 'pretrain_coco', 'demo', 'mmyolo',
             'custom_official', 'custom', 'custom_ota', 'custom_sgd_ota',
             'custom_finetune', 'custom_no_ota_finetune',
             'custom_sgd_finetune')
METRICS = ('coco/bbox_mAP_50', 'coco/bbox_mAP')


def _coco_dataset_config(base: str, data_root: str, classes) -> str:
    """A config of ``base`` whose train and val datasets read the COCO json
    under ``data_root``, with ``base``'s own pipelines and batch shapes."""
    ann = data_root + '/annotations/instances_val.json'
    return f"""_base_ = [{base!r}]
_metainfo = dict(classes={tuple(classes)!r})
train_dataloader = dict(dataset=dict(_delete_=True, type='YOLOv5CocoDataset',
    data_root={data_root!r}, metainfo=_metainfo,
    ann_file='annotations/instances_train.json',
    data_prefix=dict(img='train/'),
    filter_cfg=dict(filter_empty_gt=False, min_size=0),
    pipeline=_base_.train_pipeline))
val_dataloader = dict(dataset=dict(_delete_=True, type='YOLOv5CocoDataset',
    data_root={data_root!r}, metainfo=_metainfo, test_mode=True,
    ann_file='annotations/instances_val.json',
    data_prefix=dict(img='val/'),
    batch_shapes_cfg=_base_.val_dataloader.dataset.batch_shapes_cfg,
    pipeline=_base_.test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file={ann!r})
test_evaluator = val_evaluator
"""


def plan_runs(work_dir: str, epochs: int, pretrain_epochs: int,
              shifted_root: str, shapes_root: str,
              make_shapes: bool = True) -> Dict[str, Dict]:
    """Each run's config file and ``--cfg-options``; the demo's shapes data
    (the pre-training runs') is written only with ``make_shapes``."""
    shifted_yaml = generate_shifted_shapes(shifted_root)
    shapes_yaml = osp.join(shapes_root + '_yolo', 'data.yaml')
    if make_shapes:
        generate_shapes_dataset(shapes_root)
        shapes_yaml = export_yolo_layout(shapes_root, shapes_root + '_yolo')
    configs = REPO_ROOT / 'configs'
    custom_cfg = str(configs / 'yolov7_tiny_custom.py')
    import mmyolo

    # by its path: a 'mmyolo::' base gets _scope_ keys, which break its
    # collate_fn (yolov5_collate() got an unexpected keyword '_scope_')
    mmyolo_cfg = osp.join(
        osp.dirname(mmyolo.__file__), '.mim', 'configs', MMYOLO_CONFIG)
    os.makedirs(work_dir, exist_ok=True)

    def derived(name: str, text: str) -> str:
        path = osp.join(work_dir, f'{name}_config.py')
        with open(path, 'w') as f:
            f.write(text)
        return path

    # ten evaluations a run (the last epoch among them), for every run alike
    every = max(epochs // 10, 1)
    # one seed for all: the two data formats then train on the same inputs
    seed = 'randomness.seed=0'

    def custom(data_yaml: str, *extra: str, run_epochs: int = epochs,
               interval: int = every, config: str = custom_cfg,
               load_from: Optional[str] = None) -> Dict:
        """A run of the custom recipe: ``extra`` are its variables."""
        options = [
            f'data_yaml={data_yaml}', *extra, f'max_epochs={run_epochs}',
            seed, 'train_batch_size_per_gpu=4', 'img_scale=(320, 320)',
            'train_num_workers=1', 'val_num_workers=1',
            f'train_cfg.val_interval={interval}',
            'train_cfg.dynamic_intervals=None'
        ]
        return dict(config=config, options=options, load_from=load_from)

    pretrain = dict(
        run_epochs=pretrain_epochs, interval=max(pretrain_epochs // 4, 1))
    runs = {
        'demo': dict(
            config=derived(
                'demo',
                _coco_dataset_config(str(configs / 'yolov7_tiny_demo.py'),
                                     shifted_root, (CLASS_NAME, ))),
            options=[
                'num_classes=1', f'max_epochs={epochs}',
                f'val_interval={every}', seed
            ]),
        'mmyolo': dict(
            config=derived(
                'mmyolo',
                f"_base_ = [{mmyolo_cfg!r}]\n"
                f"_metainfo = dict(classes=({CLASS_NAME!r}, ))\n"
                'train_dataloader = dict(dataset=dict(metainfo=_metainfo))\n'
                'val_dataloader = dict(dataset=dict(metainfo=_metainfo))\n'
                'test_dataloader = val_dataloader\n'
                # the metric of the other runs: up to 100 detections an
                # image (MMYOLO's (100, 1, 10) counts 10 for mAP_50)
                'val_evaluator = dict(proposal_nums=(1, 10, 100))\n'
                'test_evaluator = val_evaluator\n'),
            options=[
                f'data_root={shifted_root}/', 'num_classes=1',
                'train_ann_file=annotations/instances_train.json',
                'train_data_prefix=train/',
                'val_ann_file=annotations/instances_val.json',
                'val_data_prefix=val/', 'img_scale=(320, 320)',
                'train_batch_size_per_gpu=8', 'train_num_workers=1',
                'val_batch_size_per_gpu=8', 'val_num_workers=1',
                f'max_epochs={epochs}', f'save_epoch_intervals={every}',
                'num_epoch_stage2=0', 'persistent_workers=False', seed
            ]),
        'custom_official': custom(shifted_yaml, 'warmup_min_iters=1000',
                                  'nominal_batch_size=64'),
        # the recipe's defaults (Adam; OTA only when fine-tuning)
        'custom': custom(shifted_yaml),
        'custom_ota': custom(shifted_yaml, 'ota=True'),
        # hyp.scratch.custom's own optimizer and assignment
        'custom_sgd_ota': custom(shifted_yaml, 'adam=False', 'ota=True'),
        'custom_finetune': custom(shifted_yaml, load_from='pretrain_yolo'),
        'custom_no_ota_finetune': custom(
            shifted_yaml, 'ota=False', load_from='pretrain_yolo'),
        'custom_sgd_finetune': custom(
            shifted_yaml, 'adam=False', load_from='pretrain_yolo'),
        'pretrain_yolo': custom(shapes_yaml, **pretrain),
        'pretrain_coco': custom(
            shapes_yaml,
            config=derived(
                'pretrain_coco',
                _coco_dataset_config(custom_cfg, shapes_root,
                                     SHAPE_CLASSES)),
            **pretrain),
    }
    return runs


def read_metrics(run_dir: str) -> List[Dict]:
    """Every evaluation of a run (from mmengine's ``scalars.json``)."""
    found = sorted(Path(run_dir).glob('*/vis_data/scalars.json'))
    if not found:
        return []
    evaluations = []
    with open(found[-1]) as f:
        for line in f:
            row = json.loads(line)
            if METRICS[0] in row:
                evaluations.append(row)
    return evaluations


def last_checkpoint(run_dir: str) -> str:
    with open(osp.join(run_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def train(name: str, run: Dict, work_dir: str, threads: int,
          ready: Dict[str, threading.Event],
          finetune_from: Optional[str] = None) -> Dict:
    run_dir = osp.join(work_dir, name)
    options = list(run['options'])
    if run.get('load_from'):
        if finetune_from is None:
            source = run['load_from']
            ready[source].wait()
            finetune_from = last_checkpoint(osp.join(work_dir, source))
        options.append(f'load_from={finetune_from}')
    cmd = [
        sys.executable,
        str(REPO_ROOT / 'tools' / 'train.py'), run['config'], '--work-dir',
        run_dir, '--cfg-options', *options
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    with open(osp.join(work_dir, f'{name}.log'), 'w') as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT,
                             env=env, cwd=str(REPO_ROOT))
    minutes = (time.perf_counter() - start) / 60
    ready[name].set()
    evaluations = read_metrics(run_dir)
    result = dict(name=name, rc=rc, minutes=round(minutes, 1),
                  evaluations=[{k: row.get(k) for k in ('step', *METRICS)}
                               for row in evaluations])
    print(f'[{name}] rc {rc}, {minutes:.1f} min, '
          f'{len(evaluations)} evaluations', flush=True)
    return result


def summarize(results: List[Dict]) -> str:
    lines = [
        '| run | epochs evaluated | best mAP_50 (epoch) | last mAP_50 | '
        'last mAP | minutes |', '|---|---|---|---|---|---|'
    ]
    for res in results:
        evals = res['evaluations']
        if res['rc'] or not evals:
            lines.append(f"| {res['name']} | failed (rc {res['rc']}, see "
                         f"{res['name']}.log) | | | | {res['minutes']} |")
            continue
        best = max(evals, key=lambda r: r[METRICS[0]])
        last = evals[-1]
        lines.append(
            f"| {res['name']} | {len(evals)} | {best[METRICS[0]]:.3f} "
            f"({best['step']}) | {last[METRICS[0]]:.3f} | "
            f"{last[METRICS[1]]:.3f} | {res['minutes']} |")
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/custom_recipe')
    parser.add_argument('--runs', nargs='+', choices=RUN_ORDER,
                        default=list(RUN_ORDER))
    parser.add_argument('--epochs', type=int, default=40,
                        help='epochs of the runs on the shifted set')
    parser.add_argument('--pretrain-epochs', type=int, default=6)
    parser.add_argument('--shifted-root', default='data/shifted_shapes')
    parser.add_argument('--shapes-root', default='data/shapes')
    parser.add_argument(
        '--finetune-from',
        help='checkpoint the finetune runs start from (default: the last '
        'of pretrain_yolo)')
    parser.add_argument('--jobs', type=int, default=1,
                        help='runs at a time')
    parser.add_argument('--threads', type=int, default=2,
                        help='torch threads of each run')
    args = parser.parse_args(argv)

    wanted = [name for name in RUN_ORDER if name in args.runs]
    runs = plan_runs(args.work_dir, args.epochs, args.pretrain_epochs,
                     args.shifted_root, args.shapes_root,
                     make_shapes=any(n.startswith('pretrain') for n in wanted))
    finetunes = [n for n in wanted if runs[n].get('load_from')]
    if finetunes and not args.finetune_from and (
            'pretrain_yolo' not in wanted and not osp.isfile(
                osp.join(args.work_dir, 'pretrain_yolo', 'last_checkpoint'))):
        parser.error(f'{finetunes} need pretrain_yolo (run it too) or '
                     '--finetune-from')
    ready = {name: threading.Event() for name in RUN_ORDER}
    for name in RUN_ORDER:
        if name not in wanted:
            ready[name].set()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(train, name, runs[name], args.work_dir, args.threads,
                        ready, args.finetune_from) for name in wanted
        ]
        results = [f.result() for f in futures]
    # one file per invocation: runs can be made in several
    stamp = time.strftime('%Y%m%d_%H%M%S')
    with open(osp.join(args.work_dir, f'results_{stamp}.json'), 'w') as f:
        json.dump(dict(epochs=args.epochs, finetune_from=args.finetune_from,
                       results=results), f, indent=1)
    print(summarize(results))


if __name__ == '__main__':
    main()
