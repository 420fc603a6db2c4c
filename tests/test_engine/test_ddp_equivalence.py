"""Two gloo processes x batch 2 train like one process x batch 4: same
gradients, optimizer state, weights and EMA after 4 iterations with summed
accumulation over 2 iterations (2 optimizer steps).

The comparison is made meaningful as follows:

* BatchNorm runs in eval mode (frozen statistics; its affine parameters
  train). In train mode each process would normalise with the statistics of
  its own 2 images, one process with those of 4, which changes the forward
  pass itself: without SyncBatchNorm (CUDA only; the detector converts to it
  in multi-GPU runs) data-parallel BatchNorm is not equivalent, in this
  framework as in the official train.py, and the running statistics are
  rank 0's (DDP broadcasts its buffers).
* The loss averages the box and class terms over the matched cells of the
  batch (times the batch size), as the official loss does; a batch split
  across processes gives the same sum only when the halves have as many
  matches per level. The second half's images carry the first half's boxes
  (other pixels), so the halves match equally and the equivalence tested is
  that of the data-parallel optimizer path: the loss scaled by the world
  size, DDP's averaging, no_sync during accumulation, the summed steps,
  weight decay, momentum, EMA.

Float tolerance: the processes sum the per-image gradients in another order
(each its half, then the all-reduce) than one process does, so results
agree to float32 rounding, not bitwise: every tensor within 1e-5 of its
largest value.
"""
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

SIZE, ITERS, ACCUMULATE = 64, 4, 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def batches():
    """ITERS batches of 4 images; images 2, 3 have the boxes of 0, 1."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(ITERS):
        boxes = []
        for image in range(2):
            for _ in range(2):
                xy = torch.rand(2, generator=gen) * 40
                wh = torch.rand(2, generator=gen) * 20 + 4
                label = torch.randint(0, 3, (1, ), generator=gen).float()
                boxes.append(torch.cat([torch.tensor([image]), label, xy,
                                        xy + wh]))
        first = torch.stack(boxes)
        second = first.clone()
        second[:, 0] += 2
        out.append(dict(
            inputs=torch.rand(4, 3, SIZE, SIZE, generator=gen) * 255,
            bboxes_labels=torch.cat([first, second])))
    return out


def part(batch, rank, world):
    """The images of one process (all of them for world 1)."""
    per = 4 // world
    keep = batch['bboxes_labels'][:, 0] // per == rank
    rows = batch['bboxes_labels'][keep].clone()
    rows[:, 0] -= rank * per
    return dict(
        inputs=batch['inputs'][rank * per:(rank + 1) * per],
        data_samples=dict(bboxes_labels=rows,
                          img_metas=[dict(img_path=f'{i}.jpg')
                                     for i in range(per)]))


def train(rank: int, world: int, out: str, port: int) -> None:
    """Train ITERS iterations on this process's images; save gradients at
    each step, then parameters, optimizer state and EMA."""
    from types import SimpleNamespace

    from mmengine.config import Config
    from mmengine.model.wrappers import MMDistributedDataParallel
    from mmengine.registry import MODELS, DefaultScope
    from torch.nn.modules.batchnorm import _BatchNorm

    import mmyolo_ext  # noqa: F401  (also the CPU launcher fix)
    from mmyolo_ext.engine.hooks import OptimStepEMAHook
    from mmyolo_ext.engine.optimizers import SummedAccumulationOptimWrapper
    from helpers.tiny_demo import DEMO_CONFIG
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
        torch.distributed.init_process_group('gloo', rank=rank,
                                             world_size=world)
    cfg = Config.fromfile(str(DEMO_CONFIG))
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.eval()
    trained = MMDistributedDataParallel(model) if world > 1 else model
    wrapper = SummedAccumulationOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01,
                                  momentum=0.9, nesterov=True,
                                  weight_decay=5e-4),
        accumulative_counts=ACCUMULATE)
    wrapper.initialize_count_status(model, 0, ITERS)
    step_grads = []
    wrapper.optimizer.register_step_pre_hook(lambda *_: step_grads.append(
        [p.grad.clone() for p in model.parameters()]))
    ema = OptimStepEMAHook(ema_type='ExpMomentumEMA', momentum=0.0001,
                           gamma=2000, update_buffers=True)
    runner = SimpleNamespace(model=trained, optim_wrapper=wrapper, iter=0,
                             epoch=0, max_iters=ITERS, max_epochs=1)
    with DefaultScope.overwrite_default_scope('mmyolo'):
        ema.before_run(runner)
    ema.before_train(runner)
    for it, batch in enumerate(batches()):
        runner.iter = it
        trained.train_step(part(batch, rank, world), wrapper)
        ema.after_train_iter(runner, it)
    state = wrapper.optimizer.state_dict()['state']
    torch.save(
        dict(grads=step_grads,
             params=[p.detach() for p in model.parameters()],
             momentum=[state[i]['momentum_buffer'] for i in sorted(state)],
             ema=list(ema.ema_model.state_dict().values())),
        Path(out) / f'world{world}_rank{rank}.pth')
    if world > 1:
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_equal_one_process(tmp_path):
    if torch.cuda.is_available():
        pytest.skip('the CPU/gloo path; nccl runs in tools/misc/gpu_selfcheck.py')
    # the single process here while the two ranks run (each process is
    # single-threaded)
    ranks = mp.start_processes(train, args=(2, str(tmp_path), free_port()),
                               nprocs=2, join=False, start_method='spawn')
    try:
        train(0, 1, str(tmp_path), 0)
        while not ranks.join():
            pass
    finally:
        for process in ranks.processes:
            if process.is_alive():
                process.terminate()
    single = torch.load(tmp_path / 'world1_rank0.pth')
    assert len(single['grads']) == ITERS // ACCUMULATE
    for rank in range(2):
        dist = torch.load(tmp_path / f'world2_rank{rank}.pth')
        for key in ('grads', 'params', 'momentum', 'ema'):
            got, want = dist[key], single[key]
            if key == 'grads':
                got = [g for step in got for g in step]
                want = [g for step in want for g in step]
            assert len(got) == len(want) > 0, key
            for a, b in zip(got, want):
                # float32 rounding of a reordered sum, relative to the size
                # of the tensor
                scale = b.float().abs().max().clamp(min=1e-12)
                assert (a.float() - b.float()).abs().max() <= 1e-5 * scale, (
                    rank, key)
