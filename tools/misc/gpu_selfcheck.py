"""One command that checks on a GPU what CUDA can break, in minutes.

    python tools/misc/gpu_selfcheck.py                 # on a CUDA machine
    python tools/misc/gpu_selfcheck.py --cpu-dry-run   # the CPU-runnable parts

Checks (each PASS, FAIL or SKIP, with a figure and its time, in a table):

* ``loss vectors``: ComputeLossOTA on the device against the CPU and the
  official vectors (tests/data/*ota_*.pt): loss terms, matches as multisets,
  gradients.
* ``assign 2000 GT``: loss + assignment of 2 images x 2,000 GT at 640 px
  (80 classes) within ``--assign-mem-gib`` of peak allocated GPU memory.
* ``demo --amp``: 20 iterations of the demo recipe with ``--amp`` (fp16 and
  GradScaler on CUDA) on a small generated subset: finite losses, the last
  5 iterations' mean below the first 5's.
* ``predict/deploy``: raw outputs and predicted boxes of the demo model,
  unfused and re-parameterized (``--deploy``), on the device equal to the
  CPU's within tolerance.
* ``hsv on device``: the recipes' HSV step as the data preprocessor runs it
  on the device (torch) against OpenCV's, on a batch of 16 images at 640,
  with its time per image.
* ``nccl 2 procs``: tools/dist_train.sh with 2 processes (2 GPUs needed).
* ``benchmark_loss``: benchmarks/loss.py --device cuda (one scenario).

Without CUDA every check is skipped and the exit code is 0. With
``--cpu-dry-run`` the parts that can run on a CPU run there (the loss
vectors, predict/deploy and hsv on device, CPU against CPU; 2 demo
iterations with bfloat16 autocast) so that the script itself is tested. Exit code 1 when a
check fails.
"""
import argparse
import copy
import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Callable, List, Tuple

import torch

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / 'tests' / 'data'
DEMO_CONFIG = ROOT / 'configs' / 'yolov7_tiny_demo.py'


class Skip(Exception):
    """A check that cannot run here; the message says why."""


def _loss_for(case: dict):
    from mmyolo_ext.registry import MODELS
    hyp = case['hyp']
    return MODELS.build(
        dict(type='ComputeLossOTA', box_gain=hyp['box'], obj_gain=hyp['obj'],
             cls_gain=hyp['cls'], scale_gains=False),
        default_args=dict(num_classes=case['nc'], anchors=case['anchors_px'],
                          strides=case['stride']))


def _dense(case: dict, key_obj: str, key_sparse: str) -> List[torch.Tensor]:
    """A vector case's dense head outputs (or gradients)."""
    out = []
    for shape, obj, index, values in zip(case['pred_shapes'], case[key_obj],
                                         case['sparse_index'],
                                         case[key_sparse]):
        dense = torch.zeros(shape)
        dense[..., 4] = obj
        b, a, gj, gi = index.unbind(1)
        dense[b, a, gj, gi] = values
        out.append(dense)
    return out


def _run_case(case: dict, device: torch.device):
    height, width = case['imgs_shape'][2:]
    preds = [p.to(device).requires_grad_()
             for p in _dense(case, 'preds_obj', 'preds_sparse')]
    out = _loss_for(case).to(device)(
        preds, case['targets'].to(device), (height, height),
        return_assignment=True)
    total = out['loss_box'] + out['loss_obj'] + out['loss_cls']
    total.backward()
    terms = torch.stack([out['loss_box'], out['loss_obj'],
                         out['loss_cls']]).detach().cpu()
    matches = [
        Counter(zip(*(level[k].cpu().tolist()
                      for k in ('image', 'anchor', 'grid_y', 'grid_x',
                                'target'))))
        for level in out['assignment']
    ]
    return terms, matches, [p.grad.cpu() for p in preds]


def _reference_matches(case: dict) -> List[Counter]:
    targets, found = case['targets'], case['matches']
    levels = []
    for level in range(len(found['as'])):
        rows = []
        for b, a, gj, gi, target in zip(found['matching_bs'][level],
                                        found['as'][level],
                                        found['gjs'][level],
                                        found['gis'][level],
                                        found['targets'][level]):
            row = int(torch.nonzero((targets == target).all(1))[0, 0])
            rows.append((int(b), int(a), int(gj), int(gi), row))
        levels.append(Counter(rows))
    return levels


def check_loss_vectors(device: torch.device, args) -> str:
    names = sorted(p.name for p in VECTORS.glob('*ota_*.pt'))
    if not names:
        raise Skip(f'no vector files in {VECTORS}')
    worst_term = worst_grad = 0.0
    for name in names:
        case = torch.load(VECTORS / name, weights_only=True)
        if 'matches_aux' in case or case['imgs_shape'][2] != case[
                'imgs_shape'][3]:
            continue  # the lead-head, square cases (as the test's main one)
        cpu = _run_case(case, torch.device('cpu'))
        dev = _run_case(case, device)
        if dev[1] != cpu[1] or dev[1] != _reference_matches(case):
            raise AssertionError(f'{name}: matches differ from the CPU or '
                                 'the official vectors')
        reference = case['loss_items'][:3] * case['bs']
        for terms in (cpu[0], dev[0]):
            rel = ((terms - reference).abs() /
                   reference.abs().clamp(min=1e-12)).max().item()
            worst_term = max(worst_term, rel)
        expected = _dense(case, 'grads_obj', 'grads_sparse')
        for got, want, ref in zip(dev[2], cpu[2], expected):
            worst_grad = max(worst_grad, (got - want).abs().max().item(),
                             (got - ref).abs().max().item())
    if worst_term > 1e-5 or worst_grad > 1e-6:
        raise AssertionError(f'terms rel diff {worst_term:.1e} (max 1e-5), '
                             f'gradients abs diff {worst_grad:.1e} (max '
                             '1e-6)')
    return (f'{len(names)} files: matches equal, terms rel diff '
            f'{worst_term:.1e}, grads abs diff {worst_grad:.1e}')


def check_assign_memory(device: torch.device, args) -> str:
    if device.type != 'cuda':
        raise Skip('measures GPU memory')
    # the loss benchmark's own scenario inputs, so that this check measures
    # what benchmarks/loss.py times
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'benchmark_loss', ROOT / 'benchmarks' / 'loss.py')
    benchmark_loss = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark_loss)
    benchmark_loss.DEVICE = device
    data = benchmark_loss.on_device(
        benchmark_loss.make_inputs(2, 640, 2000, 80))
    loss = benchmark_loss.build_ours(80).to(device)
    preds = benchmark_loss.official_layout(data['raw'], 80)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        out = loss(preds, data['targets'], data['input_hw'])
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    if not all(torch.isfinite(v).all() for v in out.values()):
        raise AssertionError('non-finite loss')
    if peak > args.assign_mem_gib:
        raise AssertionError(f'peak {peak:.2f} GiB > {args.assign_mem_gib}')
    return f'peak extra {peak:.2f} GiB (bound {args.assign_mem_gib} GiB)'


def _small_demo(work: Path, images: int, img_size: int, epochs: int) -> Path:
    path = work / 'selfcheck_demo.py'
    path.write_text(textwrap.dedent(f"""
        _base_ = [{str(DEMO_CONFIG)!r}]
        data_root = {str(work / 'shapes') + '/'!r}
        train_dataloader = dict(
            num_workers=0, persistent_workers=False,
            dataset=dict(data_root=data_root, generate=dict(
                num_train={images}, num_val=2, img_size={img_size})))
        val_dataloader = None
        val_evaluator = None
        val_cfg = None
        train_cfg = dict(max_epochs={epochs}, val_interval={epochs + 1})
        default_hooks = dict(
            checkpoint=dict(interval=-1, save_last=False, save_best=None),
            logger=dict(interval=1),
            param_scheduler=dict(max_epochs={epochs}))
        randomness = dict(seed=0)
        """))
    return path


def check_demo_amp(device: torch.device, args) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if device.type == 'cuda':  # 2 epochs x 10 iterations of 4 images
            cfg = _small_demo(work, images=40, img_size=320, epochs=2)
        else:  # dry run: 2 iterations of 4 images
            cfg = _small_demo(work, images=8, img_size=64, epochs=1)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        run = subprocess.run(
            [sys.executable, str(ROOT / 'tools' / 'train.py'), str(cfg),
             '--amp', '--work-dir', str(work / 'run')],
            cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=args.timeout)
        if run.returncode != 0:
            raise AssertionError('train.py --amp failed:\n' +
                                 (run.stdout + run.stderr)[-2000:])
        losses = []
        for scalars in sorted(work.glob('run/*/vis_data/scalars.json')):
            for line in scalars.read_text().splitlines():
                record = json.loads(line)
                if 'loss' in record:
                    losses.append(record['loss'])
    if not losses or not all(math.isfinite(v) for v in losses):
        raise AssertionError(f'losses not finite: {losses}')
    if device.type != 'cuda':
        return f'{len(losses)} iterations (bf16 CPU), finite'
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    if len(losses) < 20 or not last < first:
        raise AssertionError(f'{len(losses)} iterations, mean loss first 5 '
                             f'{first:.3f}, last 5 {last:.3f}')
    return f'{len(losses)} iterations, loss {first:.3f} -> {last:.3f}'


def _demo_detector():
    """The demo's detector with BatchNorm statistics measured on random
    images (initial statistics saturate the outputs), in eval mode."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope
    from torch.nn.modules.batchnorm import _BatchNorm
    cfg = Config.fromfile(str(DEMO_CONFIG))
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    model.init_weights()
    for norm in model.modules():
        if isinstance(norm, _BatchNorm):
            norm.reset_running_stats()
            norm.momentum = None
    model.train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model(torch.rand(2, 3, 160, 160, generator=gen), mode='tensor')
    return model.eval()


def _predict(model, inputs: torch.Tensor, device: torch.device):
    from mmdet.structures import DetDataSample
    model = model.to(device)
    inputs = inputs.to(device)
    size = tuple(inputs.shape[2:])
    samples = [DetDataSample(metainfo=dict(
        img_shape=size, ori_shape=size, batch_input_shape=size,
        scale_factor=(1., 1.), pad_param=[0., 0., 0., 0.]))
        for _ in range(len(inputs))]
    with torch.no_grad():
        raw = [m.cpu() for m in model(inputs, mode='tensor')]
        results = model.predict(inputs, samples)
    boxes = [r.pred_instances.bboxes.cpu() for r in results]
    scores = [r.pred_instances.scores.cpu() for r in results]
    return raw, boxes, scores


def check_predict_deploy(device: torch.device, args) -> str:
    from mmyolo_ext.deploy import reparameterize
    model = _demo_detector()
    fused = reparameterize(copy.deepcopy(model))
    inputs = torch.rand(2, 3, 160, 160,
                        generator=torch.Generator().manual_seed(1))
    reference = _predict(copy.deepcopy(model), inputs, torch.device('cpu'))
    worst_raw = worst_box = 0.0
    for net in (model, fused):
        raw, boxes, scores = _predict(copy.deepcopy(net), inputs, device)
        for got, want in zip(raw, reference[0]):
            worst_raw = max(worst_raw, (got - want).abs().max().item())
        for got, want, s_got, s_want in zip(boxes, reference[1], scores,
                                            reference[2]):
            # boxes above a score well clear of the threshold
            keep_got, keep_want = s_got > 0.05, s_want > 0.05
            if keep_got.sum() != keep_want.sum():
                raise AssertionError('different numbers of boxes above 0.05')
            if keep_got.any():
                worst_box = max(worst_box, (got[keep_got] - want[keep_want]
                                            ).abs().max().item())
    if worst_raw > 1e-3 or worst_box > 0.05:
        raise AssertionError(f'raw max diff {worst_raw:.1e} (1e-3), boxes '
                             f'{worst_box:.1e} px (0.05)')
    return (f'unfused + deploy vs CPU: raw {worst_raw:.1e}, boxes '
            f'{worst_box:.1e} px')


def check_hsv_on_device(device: torch.device, args) -> str:
    import numpy as np

    from mmyolo_ext.datasets.transforms.hsv_aug import apply_hsv_gains
    from mmyolo_ext.models.data_preprocessors import hsv_augment_torch
    rng = np.random.default_rng(0)
    small = torch.from_numpy(
        rng.integers(0, 256, (16, 3, 40, 40), dtype=np.uint8)).float()
    batch = torch.nn.functional.interpolate(
        small, size=(640, 640), mode='bilinear').to(torch.uint8)
    gains = torch.from_numpy(
        rng.uniform(-1, 1, (16, 3)) * [0.015, 0.7, 0.4] + 1)
    on_device = batch.to(device)
    hsv_augment_torch(on_device, gains)  # warm-up
    sync = torch.cuda.synchronize if device.type == 'cuda' else (
        lambda: None)
    sync()
    start = time.perf_counter()
    got = hsv_augment_torch(on_device, gains).cpu()
    sync()
    per_image = (time.perf_counter() - start) / len(batch) * 1e3
    worst = off = 0
    for image, gain, result in zip(batch, gains.numpy(), got):
        want = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        apply_hsv_gains(want, gain)
        diff = np.abs(result.permute(1, 2, 0).numpy().astype(int) - want)
        worst, off = max(worst, int(diff.max())), off + int((diff > 0).sum())
    share = off / got.numel()
    if worst > 1 or share > 1e-3:
        raise AssertionError(f'max diff {worst} levels, {share:.1e} of the '
                             'values differ (1, 1e-3)')
    return (f'vs OpenCV: max {worst} level, {share:.1e} differ; '
            f'{per_image:.2f} ms an image')


def check_nccl(device: torch.device, args) -> str:
    if device.type != 'cuda' or torch.cuda.device_count() < 2:
        raise Skip(f'needs 2 GPUs ({torch.cuda.device_count()} here)')
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg = _small_demo(work, images=16, img_size=160, epochs=1)
        env = dict(os.environ, PYTHON=sys.executable, PORT='29531')
        run = subprocess.run(
            ['bash', str(ROOT / 'tools' / 'dist_train.sh'), str(cfg), '2',
             '--work-dir', str(work / 'run')],
            cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=args.timeout)
    log = run.stdout + run.stderr
    if run.returncode != 0:
        raise AssertionError('dist_train.sh failed:\n' + log[-2000:])
    return 'nccl, SyncBN, 2 processes: trained'


def check_benchmark(device: torch.device, args) -> str:
    if device.type != 'cuda':
        raise Skip('the CUDA benchmark')
    run = subprocess.run(
        [sys.executable, str(ROOT / 'benchmarks' / 'loss.py'),
         '--device', str(device), '--scenarios', 'bs16_8gt', '--repeats',
         '20', '--mmyolo-repeats', '10'],
        cwd=ROOT, capture_output=True, text=True, timeout=args.timeout)
    if run.returncode != 0 or 'speed-up' not in run.stdout:
        raise AssertionError((run.stdout + run.stderr)[-2000:])
    print(run.stdout)
    speed = next(line for line in run.stdout.splitlines()
                 if 'speed-up' in line)
    return speed.strip()


CHECKS: List[Tuple[str, Callable]] = [
    ('loss vectors', check_loss_vectors),
    ('assign 2000 GT', check_assign_memory),
    ('demo --amp', check_demo_amp),
    ('predict/deploy', check_predict_deploy),
    ('hsv on device', check_hsv_on_device),
    ('nccl 2 procs', check_nccl),
    ('benchmark_loss', check_benchmark),
]
DRY_RUN = ('loss vectors', 'demo --amp', 'predict/deploy', 'hsv on device')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--cpu-dry-run', action='store_true',
                        help='run the CPU-runnable checks on the CPU')
    parser.add_argument('--checks', nargs='+', choices=[n for n, _ in CHECKS],
                        help='only these checks')
    parser.add_argument('--assign-mem-gib', type=float, default=2.0,
                        help='GPU memory bound of the 2,000 GT assignment')
    parser.add_argument('--timeout', type=float, default=240,
                        help='seconds for each subprocess')
    args = parser.parse_args()
    import mmyolo_ext  # noqa: F401
    cuda = torch.cuda.is_available()
    device = torch.device('cuda' if cuda else 'cpu')
    if cuda:
        print(f'device: {torch.cuda.get_device_name(0)} '
              f'({torch.cuda.device_count()} GPU), torch {torch.__version__}')
    else:
        print('no CUDA device: ' + (
            'dry run of the CPU-runnable checks on the CPU'
            if args.cpu_dry_run else 'every check skipped'))
    rows = []
    for name, check in CHECKS:
        if args.checks and name not in args.checks:
            continue
        start = time.perf_counter()
        try:
            if not cuda and not (args.cpu_dry_run and name in DRY_RUN):
                raise Skip('no CUDA device')
            result, figure = 'PASS', check(device, args)
        except Skip as why:
            result, figure = 'SKIP', str(why)
        except Exception as error:  # report and go on with the others
            traceback.print_exc()
            result, figure = 'FAIL', str(error).splitlines()[0][:100]
        rows.append((name, result, figure, time.perf_counter() - start))
    width = max(len(r[0]) for r in rows)
    print(f'\n{"check":<{width}}  result  {"time":>7}  figure')
    for name, result, figure, seconds in rows:
        print(f'{name:<{width}}  {result:<6}  {seconds:6.1f}s  {figure}')
    return 1 if any(r[1] == 'FAIL' for r in rows) else 0


if __name__ == '__main__':
    sys.exit(main())
