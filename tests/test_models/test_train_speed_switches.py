"""The detector's speed switches (channels_last, compile_convs) change how the
convolutions run, not what the training computes: the same losses over 20
iterations, the same gradients, the same parameter names; the loss reads a
channels_last head output through the same zero-copy view."""

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmyolo_ext  # noqa: F401
from mmyolo_ext.registry import MODELS

from helpers.paths import ROOT
DEMO = ROOT / 'configs' / 'yolov7_tiny_demo.py'
SIZE = 64


def build_demo_model(**switches):
    """The demo's yolov7-tiny (3 classes), the same weights for any
    switches; without any, plain NCHW eager (the demo's own default is
    channels_last)."""
    cfg = Config.fromfile(str(DEMO))
    cfg.model.update(dict(channels_last=False, compile_convs=False),
                     **switches)
    init_default_scope('mmyolo')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.train()


def batches(count: int, batch: int = 2, objects: int = 3):
    """Seeded images in [0, 1] and MMYOLO's packed ground truths."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(count):
        images = torch.rand(batch, 3, SIZE, SIZE, generator=gen)
        wh = torch.empty(batch * objects, 2).uniform_(0.1, 0.5, generator=gen)
        centre = torch.rand(batch * objects, 2,
                            generator=gen) * (1 - wh) + wh / 2
        boxes = torch.cat([centre - wh / 2, centre + wh / 2], 1) * SIZE
        labels = torch.randint(0, 3, (batch * objects, 1), generator=gen)
        ids = torch.arange(batch).repeat_interleave(objects)[:, None]
        rows = torch.cat([ids.float(), labels.float(), boxes], 1)
        metas = [dict(batch_input_shape=(SIZE, SIZE))] * batch
        out.append((images, dict(bboxes_labels=rows, img_metas=metas)))
    return out


def train(model, data):
    """Adam steps as the demo's (lr 1e-3, betas (0.937, 0.999)); returns
    the loss of each iteration and the first iteration's gradients."""
    optimizer = torch.optim.Adam(
        model.parameters(), lr=1e-3, betas=(0.937, 0.999))
    losses, first_grads = [], None
    for images, samples in data:
        loss, _ = model.parse_losses(model.loss(images, samples))
        loss.backward()
        if first_grads is None:
            first_grads = {
                n: p.grad.clone()
                for n, p in model.named_parameters() if p.grad is not None
            }
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=torch.float64), first_grads


@pytest.fixture(scope='module')
def eager_first_step():
    """The NCHW eager model's first step on ``batches(1)``, the reference
    of the channels_last and compiled steps: the loss and the gradients
    (what :func:`train` returns for its first iteration)."""
    model = build_demo_model()
    images, samples = batches(1)[0]
    loss, _ = model.parse_losses(model.loss(images, samples))
    loss.backward()
    return loss.detach(), {
        n: p.grad.clone()
        for n, p in model.named_parameters() if p.grad is not None
    }


def test_channels_last_lays_out_weights_and_batches():
    model = build_demo_model(channels_last=True)
    conv = next(m for m in model.backbone.modules()
                if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    images, _ = batches(1)[0]
    raw_maps = model.bbox_head(model.extract_feat(images))
    assert all(
        m.is_contiguous(memory_format=torch.channels_last) for m in raw_maps)
    # checkpoints are interchangeable: same names, same shapes
    plain = build_demo_model().state_dict()
    fast = model.state_dict()
    assert list(plain) == list(fast)
    assert all(plain[k].shape == fast[k].shape for k in plain)


def test_official_layout_of_a_channels_last_map_is_a_view():
    """(bs, na * no, ny, nx) in NHWC memory -> (bs, na, ny, nx, no): no
    copy, the same values as from the contiguous map, and the loss of
    both (and its gradient w.r.t. the map) agree."""
    model = build_demo_model()
    head = model.bbox_head
    gen = torch.Generator().manual_seed(2)
    images, samples = batches(1)[0]
    maps = [
        torch.randn(2, 24, SIZE // s, SIZE // s, generator=gen)
        for s in (8, 16, 32)
    ]
    nhwc = [m.contiguous(memory_format=torch.channels_last) for m in maps]
    for plain, fast in zip(maps, nhwc):
        view = head.to_official_layout(fast)
        assert view.data_ptr() == fast.data_ptr()
        assert view.stride(-1) == 1  # a cell's channels are adjacent
        torch.testing.assert_close(view,
                                   plain.view(2, 3, 8, *plain.shape[2:])
                                   .permute(0, 1, 3, 4, 2), rtol=0, atol=0)
    targets, hw = head.targets_from_samples(samples, torch.device('cpu'))

    def loss_and_grads(raw):
        raw = [m.clone().requires_grad_() for m in raw]
        losses = head.loss_by_feat(raw, targets, hw)
        total = sum(v for k, v in losses.items() if 'loss' in k)
        total.backward()
        return total.detach(), [m.grad for m in raw]

    loss_plain, grads_plain = loss_and_grads(maps)
    loss_fast, grads_fast = loss_and_grads(nhwc)
    torch.testing.assert_close(loss_fast, loss_plain, rtol=1e-6, atol=0)
    for g_fast, g_plain in zip(grads_fast, grads_plain):
        assert g_fast.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(g_fast, g_plain, rtol=1e-5, atol=1e-9)


def test_channels_last_keeps_the_first_step(eager_first_step):
    """The first demo-optimizer iteration from the same seed: the NHWC
    model's loss and gradients are the NCHW model's within float tolerance.

    Longer trajectories are no test of the layout: already between two NCHW
    runs that differ only in torch's thread count, the losses part by ~5 %
    within 4 iterations (float rounding flips the side of LeakyReLU's kink
    for a few activations and training from scratch amplifies it).
    """
    ref_loss, ref_grads = eager_first_step
    ref_losses = torch.tensor([ref_loss.item()], dtype=torch.float64)
    losses, grads = train(build_demo_model(channels_last=True), batches(1))
    torch.testing.assert_close(losses, ref_losses, rtol=1e-5, atol=0)
    assert grads.keys() == ref_grads.keys()
    ref = torch.cat([g.flatten() for g in ref_grads.values()])
    fast = torch.cat([grads[n].flatten() for n in ref_grads])
    # 1e-2: the NCHW float32 gradient is itself up to ~1e-2 (elementwise,
    # stem convs) from a float64 computation of the same step
    assert (fast - ref).norm() / ref.norm() < 1e-2


def test_compiled_convs_give_the_eager_step_and_serve_copies(
        eager_first_step):
    """compile_convs through dynamo (aot_eager backend: the real tracing and
    autograd, no C++ build): the first step's losses and gradients equal the
    eager step's, and a deep copy (the EMA model) runs its own weights."""
    import copy
    images, samples = batches(1)[0]
    compiled = build_demo_model(compile_convs=dict(backend='aot_eager'))
    ema = copy.deepcopy(compiled)
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.5)
    results = [eager_first_step]
    for model in (compiled, ema):
        losses = model.loss(images, samples)
        loss, _ = model.parse_losses(losses)
        loss.backward()
        results.append((loss.detach(), {
            n: p.grad
            for n, p in model.named_parameters() if p.grad is not None
        }))
    (loss_e, grads_e), (loss_c, grads_c), (loss_ema, _) = results
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=0)
    assert grads_c.keys() == grads_e.keys()
    for name in grads_e:
        torch.testing.assert_close(
            grads_c[name], grads_e[name], rtol=1e-4, atol=1e-6, msg=name)
    assert abs(loss_ema.item() - loss_e.item()) > 1e-3 * loss_e.item()


def test_compile_convs_rejects_a_bad_setting():
    with pytest.raises(TypeError, match='compile_convs'):
        build_demo_model(compile_convs='yes')
