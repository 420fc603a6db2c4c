"""Time a checkpoint save: our atomic write (temporary file, fsync, rename,
folder fsync) against mmengine's plain one, in the same run.

The checkpoints are those a training run writes: the model of the config
(``state_dict``), its EMA copy (``ema_state_dict``) and the optimizer's state
(momentum / Adam moments) of the config's optimizer after one step. Both
writers take the same dict: mmengine's ``save_checkpoint`` (``torch.save``
into memory, then one write into the final file: the data may still sit
in the page cache when it returns) and the same call through our
``atomic_local`` backend (what our CheckpointHook passes). They are timed in
interleaved rounds into the same folder, and each round's ratio reported
(median and range). Ours twice: with the fsync and rename done before the
save returns, and as our CheckpointHook writes (``background=True``): the
file written before the save returns, its fsync and rename in a background
thread (the time until it is in place is shown too). The fsync costs the
difference between "handed to the OS" and "on the disk".

Usage::

    python benchmarks/checkpoint_save.py                  # demo and L
    python benchmarks/checkpoint_save.py --configs configs/yolov7_l_coco.py \
        --rounds 5 --dir /path/on/the/training/disk
"""
import argparse
import os
import os.path as osp
import statistics
import tempfile
import time

import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner.checkpoint import save_checkpoint

import mmyolo_ext  # noqa: F401  (registers our modules and backend)
from mmyolo_ext.engine.checkpoint_files import FINISHER
from mmyolo_ext.engine.config_variables import load_config

DEFAULT_CONFIGS = ['configs/yolov7_tiny_demo.py', 'configs/yolov7_l_coco.py']


def training_checkpoint(config: str) -> dict:
    """What a training run saves for ``config``: weights, EMA weights and
    the optimizer's state after one step."""
    cfg = load_config(config, None)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(cfg.model)
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optim_wrapper.step()  # creates the momentum / moment buffers
    state = model.state_dict()
    return dict(
        meta=dict(epoch=1, iter=100, cfg=cfg.pretty_text),
        state_dict=state,
        ema_state_dict={f'module.{k}': v.clone()
                        for k, v in state.items()},
        optimizer=optim_wrapper.state_dict())


PLAIN = None  # mmengine's LocalBackend
ATOMIC = dict(backend='atomic_local')  # fsync and rename before returning
BACKGROUND = dict(backend='atomic_local', background=True)  # our hook's


def time_save(checkpoint: dict, path: str, backend_args) -> tuple:
    """Seconds until the save returns (training waits that long), and
    until the file is in place."""
    start = time.perf_counter()
    save_checkpoint(checkpoint, path, backend_args=backend_args)
    returned = time.perf_counter() - start
    FINISHER.wait()
    return returned, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--configs', nargs='+', default=DEFAULT_CONFIGS)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument(
        '--dir', default=None,
        help='folder to save into (default: a temporary folder under '
        'work_dirs/, the training runs\' disk)')
    args = parser.parse_args()
    os.makedirs('work_dirs', exist_ok=True)
    folder = args.dir or tempfile.mkdtemp(prefix='bench_ckpt_',
                                          dir='work_dirs')
    print(f'load: {os.getloadavg()[0]:.2f} (1 min); folder: {folder}')
    print('| checkpoint | size | mmengine plain save (s) | atomic, fsync '
          'in line (s) | ratio | atomic, fsync in background: training '
          'waits (s) | ratio | until in place (s) |')
    print('|---|---|---|---|---|---|---|---|')
    for config in args.configs:
        checkpoint = training_checkpoint(config)
        paths = {name: osp.join(folder, f'{name}.pth')
                 for name in ('plain', 'atomic', 'background')}
        writers = dict(plain=PLAIN, atomic=ATOMIC, background=BACKGROUND)
        times = {name: [] for name in writers}
        for round_ in range(args.rounds + 1):  # round 0 warms up
            for name, backend_args in writers.items():
                timing = time_save(checkpoint, paths[name], backend_args)
                if round_:
                    times[name].append(timing)
        size = osp.getsize(paths['atomic']) / 1e6

        def ratio(name: str) -> str:
            pairs = zip(times[name], times['plain'])
            ratios = sorted(t[0] / p[0] for t, p in pairs)
            return (f'{statistics.median(ratios):.3f} '
                    f'({ratios[0]:.3f}-{ratios[-1]:.3f})')

        def median(name: str, which: int = 0) -> str:
            return f'{statistics.median(t[which] for t in times[name]):.3f}'

        print(f'| {osp.basename(config)} | {size:.0f} MB | {median("plain")} '
              f'| {median("atomic")} | {ratio("atomic")} '
              f'| {median("background")} | {ratio("background")} '
              f'| {median("background", 1)} |')
        for path in paths.values():
            os.remove(path)
    print(f'load: {os.getloadavg()[0]:.2f} (1 min)')
    if args.dir is None:
        os.rmdir(folder)


if __name__ == '__main__':
    main()
