"""Save the training curves (loss per iteration, mAP per evaluation)."""
import json
import os.path as osp
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmyolo_ext.registry import HOOKS


@HOOKS.register_module()
class CurvePlotHook(Hook):
    """Write a PNG of the loss and mAP curves, and their numbers as JSON.

    The loss terms of every training iteration and the chosen metrics of
    every validation are recorded; after each validation and at the end of
    training the main process writes ``<work_dir>/<filename>.png`` (left: the
    loss terms, raw and smoothed, per iteration; right: the metrics per
    epoch) and ``<work_dir>/<filename>.json`` (the same numbers, with the
    wall time of each evaluation since training began). The history is
    saved in checkpoints, so a resumed run keeps drawing the whole curve.

    Args:
        metric_keys (Sequence[str]): Metrics to draw, as the evaluator names
            them. Defaults to COCO's bbox mAP and mAP_50.
        loss_prefix (str): Outputs of the training step whose key starts
            with this are drawn as loss terms. Defaults to ``'loss'``.
        smooth (int): Window (iterations) of the moving average drawn over
            the raw loss. Defaults to 20.
        filename (str): Base name of the files. Defaults to ``'curves'``.
    """
    priority = 'VERY_LOW'  # after the logger has read the outputs

    def __init__(self,
                 metric_keys: Sequence[str] = ('coco/bbox_mAP',
                                               'coco/bbox_mAP_50'),
                 loss_prefix: str = 'loss',
                 smooth: int = 20,
                 filename: str = 'curves') -> None:
        if smooth < 1:
            raise ValueError(f'CurvePlotHook: smooth={smooth} must be >= 1')
        self.metric_keys = tuple(metric_keys)
        self.loss_prefix = loss_prefix
        self.smooth = smooth
        self.filename = filename
        self.losses: Dict[str, List[float]] = {}
        self.loss_iters: List[int] = []
        self.evals: List[Dict[str, float]] = []
        self._start: Optional[float] = None
        self._elapsed_before = 0.0  # training seconds of earlier (resumed) runs

    def before_train(self, runner: Runner) -> None:
        self._start = time.perf_counter()

    def _elapsed(self) -> float:
        now = time.perf_counter()
        return self._elapsed_before + (now - self._start
                                       if self._start is not None else 0.)

    def after_train_iter(self,
                         runner: Runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if not outputs:
            return
        self.loss_iters.append(runner.iter + 1)
        count = len(self.loss_iters)
        for key, value in outputs.items():
            if key.startswith(self.loss_prefix):
                # a term that appears late is padded, so series stay aligned
                series = self.losses.setdefault(key,
                                                [float('nan')] * (count - 1))
                if hasattr(value, 'detach'):  # a loss still in the graph
                    value = value.detach()
                series.append(float(value))
        for series in self.losses.values():
            if len(series) < count:  # a term missing from this iteration
                series.append(float('nan'))

    def after_val_epoch(self,
                        runner: Runner,
                        metrics: Optional[Dict[str, float]] = None) -> None:
        if not metrics:
            return
        record = dict(
            epoch=runner.epoch,
            iter=runner.iter,
            seconds=round(self._elapsed(), 1))
        record.update({k: float(metrics[k])
                       for k in self.metric_keys if k in metrics})
        self.evals.append(record)
        self._save(runner)

    def after_train(self, runner: Runner) -> None:
        self._save(runner)

    def before_save_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['curve_plot'] = dict(
            losses=self.losses,
            loss_iters=self.loss_iters,
            evals=self.evals,
            seconds=self._elapsed())

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        state = checkpoint.get('meta', {}).get('curve_plot')
        if state is None:
            return
        self.losses = {k: list(v) for k, v in state['losses'].items()}
        self.loss_iters = list(state['loss_iters'])
        self.evals = list(state['evals'])
        self._elapsed_before = float(state['seconds'])

    def _save(self, runner: Runner) -> None:
        if not is_main_process():
            return
        path = osp.join(runner.work_dir, self.filename)
        with open(path + '.json', 'w') as f:
            json.dump(
                dict(
                    evals=self.evals,
                    loss_iters=self.loss_iters,
                    losses=self.losses),
                f)
        self._plot(path + '.png')

    def _plot(self, path: str) -> None:
        import matplotlib
        matplotlib.use('Agg')  # no display needed
        import matplotlib.pyplot as plt

        fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(12, 4.5))
        iters = np.asarray(self.loss_iters)
        for key, values in sorted(self.losses.items()):
            values = np.asarray(values, dtype=float)
            line, = ax_loss.plot(iters[:len(values)], values, alpha=0.25,
                                 linewidth=0.8)
            if len(values) >= self.smooth:
                kernel = np.ones(self.smooth) / self.smooth
                smoothed = np.convolve(values, kernel, mode='valid')
                ax_loss.plot(iters[self.smooth - 1:len(values)], smoothed,
                             color=line.get_color(), label=key)
            else:
                line.set_label(key)
        ax_loss.set_xlabel('iteration')
        ax_loss.set_ylabel('loss (log scale)')
        ax_loss.set_yscale('log')
        ax_loss.set_title(f'training loss (moving average of {self.smooth})')
        if self.losses:
            ax_loss.legend()
        ax_loss.grid(alpha=0.3)
        for key in self.metric_keys:
            points = [(e['epoch'], e[key]) for e in self.evals if key in e]
            if points:
                epochs, values = zip(*points)
                ax_map.plot(epochs, values, marker='o', label=key)
        ax_map.set_xlabel('epoch')
        ax_map.set_ylabel('metric')
        ax_map.set_ylim(0, 1)
        ax_map.set_title('validation')
        ax_map.grid(alpha=0.3)
        if self.evals:
            ax_map.legend()
            last = self.evals[-1]
            ax_map.text(
                0.02, 0.95,
                f"last: epoch {last['epoch']}, {last['seconds']:.0f} s "
                'of training',
                transform=ax_map.transAxes,
                va='top')
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
