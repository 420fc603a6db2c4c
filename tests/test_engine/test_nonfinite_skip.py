"""Non-finite steps are skipped, not fatal: nothing applied, EMA not
updated, logged with iteration, loss term, level and images, counted; N
skipped steps in a row stop the run with an error saying where to look."""
import logging
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import mmyolo_ext  # noqa: F401
from mmyolo_ext.engine.hooks import OptimStepEMAHook
from mmyolo_ext.engine.optimizers import SummedAccumulationOptimWrapper
from mmyolo_ext.engine.optimizers.nonfinite_step_guard import \
    note_batch_files
from helpers.tiny_demo import tiny_demo_cfg


class Net(nn.Module):

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x, nan_loss=False):
        """A loss dict, as a detector's in ``mode='loss'``: the loss and
        the log variable of a loss module's non-finite terms ``(heads,
        levels)``, here level 1's objectness when ``nan_loss``."""
        loss = self.linear(x).square().mean()
        nonfinite_obj = torch.zeros(1, 3)
        if nan_loss:
            loss = loss * float('nan')
            nonfinite_obj[0, 1] = float('nan')
        return dict(loss=loss, nonfinite_obj=nonfinite_obj)


def guarded(accumulate, **kwargs):
    torch.manual_seed(0)
    net = Net()
    wrapper = SummedAccumulationOptimWrapper(
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
        accumulative_counts=accumulate, **kwargs)
    wrapper.initialize_count_status(net, 0, 100)
    ema = OptimStepEMAHook(ema_type='ExpMomentumEMA', momentum=0.0001,
                           gamma=2000, update_buffers=True)
    runner = SimpleNamespace(model=net, optim_wrapper=wrapper, iter=0,
                             epoch=0, max_iters=100, max_epochs=1)
    with DefaultScope.overwrite_default_scope('mmyolo'):
        ema.before_run(runner)
    ema.before_train(runner)
    return net, wrapper, ema, runner


def weights(module):
    return [t.detach().clone() for t in module.state_dict().values()]


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def iterate(net, wrapper, ema, runner, nan_loss=False, nan_grad=False):
    """One training iteration as MMEngine's train_step runs it: batch files
    posted, forward in the wrapper's context, update, EMA hook."""
    note_batch_files([f'it{wrapper._inner_count + 1}_{i}.jpg'
                      for i in range(2)])
    with wrapper.optim_context(net):
        loss = net(torch.ones(2, 3), nan_loss)['loss']
    if nan_grad:  # a finite loss whose gradient is not
        net.linear.weight.register_hook(lambda g: g * float('inf'))
    wrapper.update_params(loss)
    ema.after_train_iter(runner, runner.iter)
    runner.iter += 1


class Records(logging.Handler):

    def __init__(self) -> None:
        super().__init__()
        self.messages = []

    def emit(self, record) -> None:
        self.messages.append(record.getMessage())


def test_non_finite_window_skips_its_step_and_training_goes_on():
    """Accumulating 2 iterations a step: iteration 3's loss is NaN, so the
    step of iterations 3-4 is skipped (weights, momentum, EMA unchanged),
    logged with terms and files; the next steps apply again."""
    net, wrapper, ema, runner = guarded(accumulate=2)
    records = Records()
    MMLogger.get_current_instance().addHandler(records)
    for _ in range(2):
        iterate(net, wrapper, ema, runner)
    before, ema_before = weights(net), weights(ema.ema_model)
    state_before = wrapper.optimizer.state_dict()['state']
    iterate(net, wrapper, ema, runner, nan_loss=True)
    iterate(net, wrapper, ema, runner)
    assert same(weights(net), before)
    assert same(weights(ema.ema_model), ema_before)
    assert int(ema.ema_model.steps) == 1
    state = wrapper.optimizer.state_dict()['state']
    assert all(torch.equal(state[k]['momentum_buffer'],
                           state_before[k]['momentum_buffer'])
               for k in state)
    assert all(p.grad is None or not p.grad.any() for p in net.parameters())
    assert (wrapper.skipped_steps, wrapper.consecutive_skips) == (1, 1)
    message, = [m for m in records.messages
                if 'Skipped the optimizer step' in m]
    assert 'of iterations 3-4 for a non-finite loss and gradient' in message
    assert 'iteration 3: loss_obj (level 1) = nan' in message
    for name in ('it3_0.jpg', 'it3_1.jpg', 'it4_0.jpg', 'it4_1.jpg'):
        assert name in message
    assert '1 in a row' in message
    for _ in range(2):  # training goes on
        iterate(net, wrapper, ema, runner)
    assert not same(weights(net), before)
    assert int(ema.ema_model.steps) == 2
    assert wrapper.consecutive_skips == 0
    # a finite loss with a non-finite gradient is skipped too
    before = weights(net)
    iterate(net, wrapper, ema, runner, nan_grad=True)
    iterate(net, wrapper, ema, runner)
    assert same(weights(net), before) and wrapper.skipped_steps == 2
    assert 'for a non-finite gradient:' in records.messages[-1]
    MMLogger.get_current_instance().removeHandler(records)


def test_ten_skips_in_a_row_stop_with_a_message():
    net, wrapper, ema, runner = guarded(accumulate=1)
    iterate(net, wrapper, ema, runner)
    for _ in range(9):
        iterate(net, wrapper, ema, runner, nan_loss=True)
    assert wrapper.consecutive_skips == 9
    with pytest.raises(RuntimeError) as error:
        iterate(net, wrapper, ema, runner, nan_loss=True)
    message = str(error.value)
    assert message.startswith('10 optimizer steps in a row were skipped')
    assert 'the last at iteration 11' in message
    assert '"Skipped the optimizer step" warnings' in message
    assert 'max_consecutive_skips' in message


class InjectNaN(Hook):
    """Puts a NaN into one objectness value of level 1's raw map at the
    given (0-based) iterations; records weights and EMA around them and the
    batches' files."""

    def __init__(self, nan_iters) -> None:
        self.nan_iters = set(nan_iters)
        self.active = False
        self.snapshots = {}
        self.files = {}

    def before_train(self, runner) -> None:
        head = runner.model.bbox_head.head_module

        def inject(module, args, out):
            if not self.active:
                return out
            out = list(out)
            level = out[1].clone()
            level[0, 4, 0, 0] = float('nan')  # anchor 0, objectness
            out[1] = level
            return out

        head.register_forward_hook(inject)
        self.ema = next(h for h in runner.hooks
                        if isinstance(h, OptimStepEMAHook))

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.active = runner.iter in self.nan_iters
        samples = data_batch['data_samples']
        metas = (samples['img_metas'] if isinstance(samples, dict) else
                 [s.metainfo for s in samples])
        self.files[runner.iter] = [m['img_path'] for m in metas]
        # parameters (BatchNorm's running statistics follow every forward
        # pass, as in any framework) and the whole EMA state
        self.snapshots[('before', runner.iter)] = (
            params(runner.model), weights(self.ema.ema_model))

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self.snapshots[('after', runner.iter)] = (
            params(runner.model), weights(self.ema.ema_model))


def test_demo_training_skips_nan_steps_and_stops_after_the_limit(tmp_path):
    """yolov7-tiny on 64 px shapes, batch 2: NaN in iteration 2's
    predictions -> that step skipped (weights and EMA unchanged), iteration
    3 trains; NaN from iteration 4 on with max_consecutive_skips=3 -> the
    run stops at iteration 6 with the message."""
    cfg = tiny_demo_cfg(
        tmp_path, images=16, img_size=64,
        extra="""
        # batch_size_per_gpu stays the demo's 4 = its nominal batch: one
        # step per iteration
        optim_wrapper = dict(max_consecutive_skips=3)
        """)
    runner = Runner.from_cfg(cfg)
    probe = InjectNaN(nan_iters={1, 3, 4, 5, 6, 7})
    runner.register_hook(probe, priority='LOW')
    with pytest.raises(RuntimeError, match='3 optimizer steps in a row'):
        runner.train()
    log = open(runner.logger.log_file).read()
    skips = [line for line in log.splitlines()
             if 'WARNING - Skipped the optimizer step' in line]
    assert len(skips) == 4
    assert 'of iteration 2 for a non-finite loss' in skips[0]
    assert 'loss_obj (level 1) = nan' in skips[0]
    for path in probe.files[1]:
        assert path in skips[0]
    spans = [s.split('Skipped the optimizer step of ')[1].split(' for ')[0]
             for s in skips]
    assert spans == [f'iteration {i}' for i in (2, 4, 5, 6)]
    assert 'Skipped steps so far: 4 (3 in a row)' in skips[3]
    assert '3 optimizer steps in a row were skipped' in log
    assert max(probe.files) == 5  # stopped in iteration 6
    snap = probe.snapshots
    for it in (1, 3, 4):  # skipped: weights and EMA as before
        assert same(snap[('after', it)][0], snap[('before', it)][0]), it
        assert same(snap[('after', it)][1], snap[('before', it)][1]), it
    for it in (0, 2):  # trained
        assert not same(snap[('after', it)][0], snap[('before', it)][0])
        assert not same(snap[('after', it)][1], snap[('before', it)][1])
    assert all(math.isfinite(t.float().sum())
               for t in snap[('after', 4)][0])
