"""The optimization pieces of the recipe: parameter groups, nominal batch,
summed gradient accumulation, warm-up / one-cycle schedule, EMA per step."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper

import mmyolo_ext  # noqa: F401
from helpers.paths import ROOT
from mmyolo_ext.engine.hooks import OptimStepEMAHook, YOLOv7ParamSchedulerHook
from mmyolo_ext.engine.optimizers import (NominalBatchOptimConstructor,
                                          SummedAccumulationOptimWrapper,
                                          split_param_groups)


class ImplicitScale(nn.Module):
    """Stands for an implicit-knowledge layer (official ImplicitM)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x):
        return x * self.implicit


class TinyNet(nn.Module):

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 2, 1)  # weight and bias
        self.implicit = ImplicitScale(2)

    def forward(self, x):
        return self.implicit(self.head(self.bn(self.conv(x))))


def ids(params):
    return {id(p) for p in params}


def test_param_groups_follow_official_split():
    net = TinyNet()
    no_decay, decay, biases = split_param_groups(net)
    assert ids(no_decay) == ids(
        [net.bn.weight, net.implicit.implicit])
    assert ids(decay) == ids([net.conv.weight, net.head.weight])
    assert ids(biases) == ids([net.bn.bias, net.head.bias])


def test_param_groups_of_yolov7_tiny_hold_implicit_layers():
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmyolo.registry import MODELS
    init_default_scope('mmyolo')
    cfg = Config.fromfile(
        str(ROOT / 'configs' / '_base_' /
            'models' / 'yolov7_tiny.py'))
    model = MODELS.build(cfg.model)
    no_decay, decay, biases = split_param_groups(model)
    assert len(no_decay) + len(decay) + len(biases) == len(
        list(model.parameters()))
    assert len(ids(no_decay) | ids(decay) | ids(biases)) == len(
        list(model.parameters()))
    implicit = [
        p for n, p in model.named_parameters()
        if 'implicit' in n.lower() or '.ia.' in n or '.im.' in n
    ]
    assert implicit, 'the tiny head has implicit layers'
    assert ids(implicit) <= ids(no_decay)
    norms = [
        m.weight for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase)
    ]
    assert ids(norms) <= ids(no_decay)
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert ids(decay) == ids(convs)


@pytest.mark.parametrize(
    'batch, accumulate, decay_scale',
    [(16, 4, 1.0), (24, 3, 24 * 3 / 64), (8, 8, 1.0), (128, 1, 2.0),
     (40, 2, 80 / 64)])
def test_constructor_accumulates_to_nominal_batch(batch, accumulate,
                                                  decay_scale):
    constructor = NominalBatchOptimConstructor(
        dict(
            type='SummedAccumulationOptimWrapper',
            optimizer=dict(
                type='SGD',
                lr=0.01,
                momentum=0.937,
                weight_decay=0.0005,
                nesterov=True,
                batch_size_per_gpu=batch)),
        dict(base_total_batch_size=64))
    wrapper = constructor(TinyNet())
    assert isinstance(wrapper, SummedAccumulationOptimWrapper)
    assert wrapper._accumulative_counts == accumulate
    groups = wrapper.optimizer.param_groups
    assert [g['weight_decay'] for g in groups] == pytest.approx(
        [0., 0.0005 * decay_scale, 0.])
    assert all(g['nesterov'] for g in groups)


def test_constructor_keeps_explicit_accumulation():
    constructor = NominalBatchOptimConstructor(
        dict(
            type='OptimWrapper',
            accumulative_counts=1,
            optimizer=dict(
                type='SGD', lr=0.01, weight_decay=0.0005,
                batch_size_per_gpu=8)))
    wrapper = constructor(TinyNet())
    assert wrapper._accumulative_counts == 1
    assert wrapper.optimizer.param_groups[1]['weight_decay'] == (
        pytest.approx(0.0005 * 8 / 64))


def test_constructor_rejects_unknown_paramwise_keys():
    with pytest.raises(KeyError, match='bias_decay_mult'):
        NominalBatchOptimConstructor(
            dict(optimizer=dict(type='SGD', lr=0.01)),
            dict(bias_decay_mult=0.))


def losses_for(net, batches):
    return [net(x).square().mean() for x in batches]


def test_summed_accumulation_sums_gradients_and_steps_on_schedule():
    torch.manual_seed(0)
    batches = [torch.randn(2, 3, 6, 6) for _ in range(5)]
    net = TinyNet()
    reference = TinyNet()
    reference.load_state_dict(net.state_dict())

    wrapper = SummedAccumulationOptimWrapper(
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        accumulative_counts=2)
    wrapper.initialize_count_status(net, 0, 5)
    before = [p.detach().clone() for p in net.parameters()]
    for x in batches[:2]:
        wrapper.update_params(net(x).square().mean())
    # one step with the SUM of both gradients (MMEngine would average)
    grads = torch.autograd.grad(
        sum(losses_for(reference, batches[:2])), list(reference.parameters()))
    for p0, p1, g in zip(before, net.parameters(), grads):
        torch.testing.assert_close(p1, p0 - 0.1 * g)

    # the count may change between steps: 3 more iterations, count 1, one
    # step per iteration
    steps = []
    wrapper.optimizer.register_step_post_hook(
        lambda *_: steps.append(wrapper._inner_count))
    wrapper._accumulative_counts = 1
    for x in batches[2:]:
        wrapper.update_params(net(x).square().mean())
    assert steps == [3, 4, 5]


def test_summed_accumulation_keeps_its_phase_across_resume():
    net = TinyNet()
    wrapper = SummedAccumulationOptimWrapper(
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        accumulative_counts=3)
    wrapper.initialize_count_status(net, 0, 20)
    for _ in range(4):  # steps at 3; one iteration accumulated after it
        wrapper.update_params(net(torch.randn(1, 3, 6, 6)).sum())
    state = wrapper.state_dict()
    assert state['accumulation_last_step'] == 3

    resumed = SummedAccumulationOptimWrapper(
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        accumulative_counts=3)
    resumed.load_state_dict(state)
    resumed.initialize_count_status(net, 4, 20)
    steps = []
    resumed.optimizer.register_step_post_hook(
        lambda *_: steps.append(resumed._inner_count))
    for _ in range(5):
        resumed.update_params(net(torch.randn(1, 3, 6, 6)).sum())
    assert steps == [6, 9]  # as without the interruption


def fake_runner(wrapper, iters_per_epoch, iteration=0, epoch=0):
    return SimpleNamespace(
        optim_wrapper=wrapper,
        train_dataloader=range(iters_per_epoch),
        iter=iteration,
        epoch=epoch)


def test_scheduler_warmup_ramps_lr_momentum_and_accumulation():
    net = TinyNet()
    wrapper = NominalBatchOptimConstructor(
        dict(
            type='SummedAccumulationOptimWrapper',
            optimizer=dict(
                type='SGD',
                lr=0.01,
                momentum=0.937,
                weight_decay=0.0005,
                nesterov=True,
                batch_size_per_gpu=8)))(net)
    assert wrapper._accumulative_counts == 8
    hook = YOLOv7ParamSchedulerHook(
        scheduler_type='cosine', lr_factor=0.1, max_epochs=10)
    # 100 iterations per epoch: warm-up is max(3 * 100, 1000) = 1000
    runner = fake_runner(wrapper, 100)
    hook.before_train(runner)
    for iteration in (0, 500, 1000):
        epoch = iteration // 100
        runner = fake_runner(wrapper, 100, iteration, epoch)
        hook.before_train_iter(runner, 0)
        target = 0.01 * ((1 - math.cos(epoch * math.pi / 10)) / 2 *
                         (0.1 - 1) + 1)
        frac = iteration / 1000
        no_decay, decay, bias = wrapper.optimizer.param_groups
        assert decay['lr'] == pytest.approx(frac * target)
        assert no_decay['lr'] == pytest.approx(frac * target)
        assert bias['lr'] == pytest.approx(0.1 + frac * (target - 0.1))
        assert decay['momentum'] == pytest.approx(0.8 + frac * 0.137)
        assert wrapper._accumulative_counts == max(
            1, int(np.round(1 + frac * 7)))


def test_scheduler_sets_next_epoch_lr_after_each_epoch():
    net = TinyNet()
    wrapper = OptimWrapper(
        torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.937))
    hook = YOLOv7ParamSchedulerHook(
        scheduler_type='cosine',
        lr_factor=0.01,
        max_epochs=4,
        warmup_epochs=0,
        warmup_mim_iter=0)
    hook.before_train(fake_runner(wrapper, 10))
    for epoch in range(4):
        runner = fake_runner(wrapper, 10, epoch * 10 + 1, epoch)
        hook.before_train_iter(runner, 1)  # past the (empty) warm-up
        hook.after_train_epoch(runner)
        # the official one-cycle factor of the NEXT epoch
        factor = (1 - math.cos((epoch + 1) * math.pi / 4)) / 2 * (0.01 -
                                                                  1) + 1
        assert wrapper.optimizer.param_groups[0]['lr'] == pytest.approx(
            0.01 * factor)
    assert wrapper.optimizer.param_groups[0]['lr'] == pytest.approx(0.0001)


def test_ema_updates_once_per_optimizer_step():
    torch.manual_seed(0)
    net = TinyNet()
    wrapper = SummedAccumulationOptimWrapper(
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        accumulative_counts=3)
    wrapper.initialize_count_status(net, 0, 9)
    hook = OptimStepEMAHook(
        ema_type='ExpMomentumEMA', momentum=0.0001, gamma=2000,
        update_buffers=True)
    runner = SimpleNamespace(model=net, optim_wrapper=wrapper, iter=0,
                             epoch=0, max_iters=9, max_epochs=1)
    hook.before_run(runner)
    hook.before_train(runner)
    after_steps = []
    for i in range(9):
        runner.iter = i
        wrapper.update_params(net(torch.randn(2, 3, 6, 6)).square().mean())
        if wrapper._last_step_count == wrapper._inner_count:
            after_steps.append(net.head.weight.detach().clone())
        hook.after_train_iter(runner, i)
    # 3 optimizer steps -> 3 EMA updates (MMEngine's EMAHook would do 9)
    assert len(after_steps) == 3
    assert int(hook.ema_model.steps) == 3
    # first update copies; update k (k = 1, 2) moves towards the model by
    # 1 - decay, decay = 0.9999 * (1 - exp(-(k + 1) / 2000))
    expected = after_steps[0]
    for k, weights in enumerate(after_steps[1:], start=1):
        decay = 0.9999 * (1 - math.exp(-(k + 1) / 2000))
        expected = decay * expected + (1 - decay) * weights
    torch.testing.assert_close(
        hook.ema_model.module.head.weight, expected, rtol=1e-5, atol=1e-6)


def test_amp_keeps_summed_accumulation():
    """--amp on a recipe with summed accumulation gets a wrapper that sums
    (SummedAccumulationOptimWrapper's counting and loss scaling) and runs
    AMP (AmpOptimWrapper's autocast, loss scaler and its state). Built only
    where AMP can run (mmengine's AmpOptimWrapper needs an accelerator)."""
    from mmengine.optim import AmpOptimWrapper

    from mmyolo_ext.engine.optimizers import (
        AmpSummedAccumulationOptimWrapper, SummedAccumulationOptimWrapper)
    from mmyolo_ext.engine.optimizers.nonfinite_step_guard import \
        NonFiniteStepGuard
    amp, summed = AmpSummedAccumulationOptimWrapper, \
        SummedAccumulationOptimWrapper
    for name in ('scale_loss', 'should_update', 'should_sync',
                 'initialize_count_status'):
        assert getattr(amp, name) is getattr(summed, name), name
    # optim_context, backward, step and the state dicts go through ours
    # first (the context, backward and step through the non-finite step
    # guard, which reads the loss dict), then AMP's (autocast)
    mro = amp.__mro__
    assert amp.optim_context is NonFiniteStepGuard.optim_context
    assert amp.backward is NonFiniteStepGuard.backward
    assert mro.index(summed) < mro.index(NonFiniteStepGuard) < mro.index(
        AmpOptimWrapper)
    assert amp.step is summed.step and amp.state_dict is summed.state_dict
