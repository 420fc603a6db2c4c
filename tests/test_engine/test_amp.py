"""Mixed precision: the loss computes in float32 whatever its inputs' dtype
or the autocast state, a yolov7-tiny training step under CPU bfloat16
autocast matches the float32 step, and --amp's wrapper (as tools/train.py
builds it) trains on a machine without CUDA with bfloat16 autocast."""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, DefaultScope

import mmyolo_ext  # noqa: F401
from helpers.tiny_demo import DEMO_CONFIG

BATCH, SIZE = 2, 128


def demo_model():
    """The demo's yolov7-tiny (3 classes, the YOLOv5 assigner: matches
    depend on the targets only, so both precisions train the same cells)."""
    cfg = Config.fromfile(str(DEMO_CONFIG))
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    model.init_weights()
    return model.train(), cfg


def batch():
    gen = torch.Generator().manual_seed(1)
    # MMYOLO's packed training batch: [image, class, x1, y1, x2, y2] pixels
    boxes = torch.tensor([[0, 0, 10, 12, 60, 70], [0, 2, 70, 20, 120, 64],
                          [1, 1, 30, 40, 90, 110]], dtype=torch.float32)
    return dict(
        inputs=torch.rand(BATCH, 3, SIZE, SIZE, generator=gen) * 255,
        data_samples=dict(bboxes_labels=boxes,
                          img_metas=[dict(img_path=f'img{i}.jpg')
                                     for i in range(BATCH)]))


def loss_and_grads(model, data, autocast_dtype=None):
    """One SGD step: the summed loss, the parameters' gradients, the
    parameters after the step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with torch.autocast('cpu', dtype=autocast_dtype or torch.bfloat16,
                        enabled=autocast_dtype is not None):
        data = model.data_preprocessor(data, True)
        losses = model.loss(data['inputs'], data['data_samples'])
    total = sum(v for k, v in losses.items() if k.startswith('loss'))
    total.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    optimizer.step()
    return losses, total, grads, [p.detach().clone()
                                  for p in model.parameters()]


def test_loss_is_float32_on_half_inputs_and_under_autocast():
    """Half / bfloat16 predictions give exactly the loss of the same values
    in float32 (the loss casts what it reads, then computes in float32),
    also inside an autocast region; gradients come back in the inputs'
    dtype, equal to the float32 ones rounded."""
    model, _ = demo_model()
    loss_module = model.bbox_head.loss_module
    anchors = model.bbox_head.anchor_sizes
    gen = torch.Generator().manual_seed(2)
    targets = torch.tensor([[0, 0, .3, .3, .3, .4], [1, 2, .6, .5, .2, .2]])
    shapes = [(BATCH, 3, SIZE // s, SIZE // s, 8) for s in (8, 16, 32)]
    for dtype in (torch.float16, torch.bfloat16):
        half = [torch.randn(s, generator=gen).to(dtype).requires_grad_()
                for s in shapes]
        full = [p.detach().float().requires_grad_() for p in half]
        expected = loss_module(full, targets, (SIZE, SIZE), anchors)
        # the loss terms, as mmengine's parse_losses sums them (the
        # nonfinite_* log variables are left out)
        sum(v for k, v in expected.items() if k.startswith('loss')).backward()
        for autocast in (False, True):
            with torch.autocast('cpu', dtype=torch.bfloat16,
                                enabled=autocast):
                got = loss_module(half, targets, (SIZE, SIZE), anchors)
            for key, value in expected.items():
                assert got[key].dtype == torch.float32, key
                assert torch.equal(got[key], value), (dtype, autocast, key)
            for p in half:
                p.grad = None
            sum(v for k, v in got.items() if k.startswith('loss')).backward()
            for p, ref in zip(half, full):
                assert p.grad.dtype == dtype
                # the float32 gradient, rounded once
                assert torch.equal(p.grad, ref.grad.to(dtype))


def test_bfloat16_training_step_matches_float32():
    """yolov7-tiny, 2 images of 128 px: forward under bfloat16 autocast,
    loss, backward, SGD step. No dtype error; each loss term within 3 % of
    the float32 step's (bfloat16 keeps 8 bits of mantissa, 0.4 % per
    rounding, through some 40 layers; measured: 0.04-0.7 % on a CPU with
    native bfloat16 convolutions (AVX512-BF16), 2.2 % for loss_obj on one
    without, where oneDNN rounds more intermediate results); finite
    gradients. The gradients of the head's biases and implicit layers
    point the way of the float32 ones (cosine > 0.99), its conv weights'
    roughly (> 0.85). Deeper convolutions are followed by BatchNorm, whose
    backward removes the mean and the scale of the gradient: at random
    initialisation what remains is a difference of large terms, which
    bfloat16 rounding dominates (measured cosine ~0.3), so those are only
    required to be finite."""
    model, _ = demo_model()
    twin = copy.deepcopy(model)
    data = batch()
    ref_losses, _, ref_grads, _ = loss_and_grads(model, copy.deepcopy(data))
    losses, _, grads, params = loss_and_grads(twin, copy.deepcopy(data),
                                              torch.bfloat16)
    for key in ('loss_box', 'loss_obj', 'loss_cls'):
        assert losses[key].dtype == torch.float32
        assert losses[key].item() == pytest.approx(ref_losses[key].item(),
                                                   rel=3e-2), key
    assert all(torch.isfinite(g).all() for g in grads)
    assert all(torch.isfinite(p).all() for p in params)
    names = [name for name, _ in model.named_parameters()]
    checked = 0
    for name, grad, ref in zip(names, grads, ref_grads):
        if not name.startswith('bbox_head.'):
            continue
        cosine = torch.nn.functional.cosine_similarity(
            grad.flatten(), ref.flatten(), dim=0)
        least = 0.85 if name.endswith('convs.0.weight') or name.endswith(
            'convs.1.weight') or name.endswith('convs.2.weight') else 0.99
        assert cosine > least, (name, cosine)
        checked += 1
    assert checked == 12  # 3 levels x (weight, bias, implicit A, M)


def test_amp_flag_trains_with_bfloat16_on_cpu():
    """tools/train.py --amp's wrapper for the demo recipe (summed
    accumulation) on this CPU-only machine: bfloat16 autocast inside
    train_step, no loss scaler, the summed steps on schedule."""
    if torch.cuda.is_available():
        pytest.skip('covers the machine without CUDA (CUDA: gpu_selfcheck)')
    model, cfg = demo_model()
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    # what tools/train.py --amp does to the config
    optim_cfg.type = 'mmyolo_ext.AmpSummedAccumulationOptimWrapper'
    optim_cfg.loss_scale = 'dynamic'
    optim_cfg.optimizer.batch_size_per_gpu = 1  # accumulate 4 to 4 images
    with DefaultScope.overwrite_default_scope('mmyolo_ext'):
        wrapper = build_optim_wrapper(model, optim_cfg)
    assert type(wrapper).__name__ == 'AmpSummedAccumulationOptimWrapper'
    assert wrapper.cast_dtype == torch.bfloat16
    assert not wrapper.loss_scaler.is_enabled()
    assert wrapper._accumulative_counts == 4
    wrapper.initialize_count_status(model, 0, 8)
    seen = []
    first_conv = next(m for m in model.modules()
                      if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(
        lambda m, i, out: seen.append(out.dtype))
    steps = []
    wrapper.optimizer.register_step_post_hook(
        lambda *_: steps.append(wrapper._inner_count))
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(4):
        log_vars = model.train_step(batch(), wrapper)
        assert torch.isfinite(log_vars['loss'])
    assert seen == [torch.bfloat16] * 4  # the forward ran in bfloat16
    assert steps == [4]
    assert any(not torch.equal(p, q)
               for p, q in zip(before, model.parameters()))
    assert wrapper.skipped_steps == 0


def test_amp_float16_without_cuda_says_it_needs_cuda():
    if torch.cuda.is_available():
        pytest.skip('covers the machine without CUDA')
    from mmyolo_ext.engine.optimizers import \
        AmpSummedAccumulationOptimWrapper
    net = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match='float16 needs CUDA'):
        AmpSummedAccumulationOptimWrapper(
            optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
            dtype='float16')


def test_demo_autocasts_where_the_cpu_has_bfloat16_instructions():
    """The demo's default precision follows the hardware, read here from
    /proc/cpuinfo (Linux): bfloat16 autocast with AVX512-BF16 or AMX,
    float32 without; amp=False / True force it."""
    if torch.cuda.is_available():
        pytest.skip('covers the machine without CUDA')
    try:
        with open('/proc/cpuinfo') as f:
            flags = set(next(line for line in f
                             if line.startswith('flags')).split())
    except (OSError, StopIteration):
        pytest.skip('no /proc/cpuinfo flags to compare with')
    native = bool(flags & {'avx512_bf16', 'amx_bf16'})
    from mmyolo_ext.engine.config_variables import load_config
    from mmyolo_ext.engine.optimizers import autocast_is_native
    assert autocast_is_native() == native
    expected = {None: native, True: True, False: False}
    for amp, autocast in expected.items():
        cfg = load_config(str(DEMO_CONFIG), dict(amp=amp))
        assert cfg.optim_wrapper.type == (
            'AmpSummedAccumulationOptimWrapper'
            if autocast else 'SummedAccumulationOptimWrapper'), amp
