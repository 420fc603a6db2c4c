"""CPU speed and memory of our YOLOv7 loss and SimOTA assigner next to the
peers (MMYOLO's ``YOLOv7Head.loss_by_feat``, MMDetection's
``SimOTAAssigner``), on identical inputs.

For each scenario the raw head outputs are generated once, in the layout a
convolution produces, ``(bs, na * (5 + nc), ny, nx)``; MMYOLO gets them split
into its box / objectness / class maps, ours gets the zero-copy view in the
official layout ``(bs, na, ny, nx, 5 + nc)``. Ground truths are pixel xyxy
boxes (MMYOLO's tensor form; it is cloned for every MMYOLO call because MMYOLO
normalizes it in place) and the same boxes normalized as MMYOLO does for ours.
Both losses are checked to agree term by term. Times are the median of
repeated forward calls on one intra-op thread, ours and the peer timed in
alternating blocks of calls, as wall-clock and as process CPU time (the CPU
time leaves out waiting for a core on a loaded machine); peak memory is the
process peak RSS increase of a forked child that makes one call. Figures are
printed, never asserted.

Usage::

    python benchmarks/loss.py                 # all scenarios
    python benchmarks/loss.py --scenarios bs16_8gt --repeats 20
    python benchmarks/loss.py --scenarios bs16_8gt --backward
    python benchmarks/loss.py --device cuda   # on a GPU

With ``--device cuda`` the inputs and both losses are on the GPU, times are
taken after a synchronisation (the CPU column is then the host's time),
peak memory is ``torch.cuda.max_memory_allocated`` over the call, MMYOLO's
call on the largest scenario is not attempted, and the YOLOX scenario stays
on the CPU.
"""
import argparse
import multiprocessing
import resource
import statistics
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope
from mmengine.structures import InstanceData


import mmyolo_ext  # noqa: F401  (registers the modules)
from mmyolo_ext.registry import MODELS, TASK_UTILS

MMYOLO_CONFIG = 'yolov7/yolov7_l_syncbn_fast_8x16b-300e_coco.py'
ANCHORS = [[[12, 16], [19, 36], [40, 28]], [[36, 75], [76, 55], [72, 146]],
           [[142, 110], [192, 243], [459, 401]]]
STRIDES = [8, 16, 32]
# name: batch size, input size, ground truths per image, classes, run MMYOLO
SCENARIOS = {
    'bs16_8gt': (16, 640, 8, 80, True),
    'bs2_300gt': (2, 640, 300, 80, True),
    'bs2_2000gt': (2, 640, 2000, 80, False),
}


def make_inputs(batch_size: int, size: int, gts_per_image: int,
                num_classes: int, seed: int = 0) -> dict:
    """Raw head outputs and ground truths of one scenario."""
    gen = torch.Generator().manual_seed(seed)
    channels = 5 + num_classes
    raw = [
        torch.randn((batch_size, 3 * channels, size // s, size // s),
                    generator=gen) * 1.5 for s in STRIDES
    ]
    # boxes: sides log-uniform in [0.02, 0.6] of the image, aspect ratio in
    # [1/3, 3], inside the image
    n = batch_size * gts_per_image
    side = torch.exp(
        torch.empty(n).uniform_(-3.912, -0.511, generator=gen)) * size
    ratio = torch.exp(torch.empty(n).uniform_(-1.0986, 1.0986, generator=gen))
    wh = torch.stack([side * ratio.sqrt(), side / ratio.sqrt()],
                     1).clamp(max=size - 1)
    xy1 = torch.rand(n, 2, generator=gen) * (size - wh)
    gt = torch.cat([
        torch.arange(batch_size).repeat_interleave(gts_per_image)[:, None],
        torch.randint(0, num_classes, (n, 1), generator=gen),
        xy1, xy1 + wh
    ], 1).float()
    # normalized [image, class, cx, cy, w, h], computed as MMYOLO does
    xy1, xy2 = gt[:, 2:4], gt[:, 4:6]
    xywh = torch.cat([(xy2 + xy1) / 2, (xy2 - xy1)], 1)
    xywh[:, 1::2] /= size
    xywh[:, 0::2] /= size
    return dict(
        raw=raw,
        gt_pixels=gt,
        targets=torch.cat([gt[:, :2], xywh], 1),
        input_hw=(size, size),
        num_classes=num_classes)


def official_layout(raw: List[torch.Tensor], num_classes: int):
    """Zero-copy ``(bs, na, ny, nx, 5 + nc)`` views of conv outputs."""
    return [
        r.view(r.size(0), 3, 5 + num_classes, r.size(2),
               r.size(3)).permute(0, 1, 3, 4, 2) for r in raw
    ]


def mmyolo_maps(raw: List[torch.Tensor], num_classes: int):
    """MMYOLO's separate box, objectness and class maps."""
    box, obj, cls = [], [], []
    for r in raw:
        bs, _, h, w = r.shape
        per_anchor = r.view(bs, 3, 5 + num_classes, h, w)
        box.append(per_anchor[:, :, :4].reshape(bs, 12, h, w).contiguous())
        obj.append(per_anchor[:, :, 4:5].reshape(bs, 3, h, w).contiguous())
        cls.append(per_anchor[:, :, 5:].reshape(bs, 3 * num_classes, h,
                                                w).contiguous())
    return cls, box, obj


def build_ours(num_classes: int) -> torch.nn.Module:
    return MODELS.build(
        dict(type='ComputeLossOTA'),
        default_args=dict(
            num_classes=num_classes, anchors=ANCHORS, strides=STRIDES))


def build_mmyolo(num_classes: int):
    import mmyolo
    from mmyolo.registry import MODELS as MMYOLO_MODELS
    cfg = Config.fromfile(
        str(Path(mmyolo.__file__).parent / '.mim' / 'configs' /
            MMYOLO_CONFIG))
    init_default_scope('mmyolo')
    head_cfg = cfg.model.bbox_head
    head_cfg.head_module.num_classes = num_classes
    head_cfg.loss_cls.loss_weight = 0.3 * num_classes / 80
    head = MMYOLO_MODELS.build(head_cfg)
    init_default_scope('mmyolo_ext')
    return head


# The device of the loss scenarios (--device).
DEVICE = torch.device('cpu')


def on_device(data: dict) -> dict:
    """A scenario's tensors on DEVICE."""
    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(DEVICE)
        if isinstance(value, list):
            return [move(v) for v in value]
        return value
    return {key: move(value) for key, value in data.items()}


def _sync() -> None:
    if DEVICE.type == 'cuda':
        torch.cuda.synchronize()


def timed(fn: Callable[[], object]) -> Tuple[float, float, object]:
    """Wall-clock and process CPU time (ms) of one call, and its result."""
    _sync()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    _sync()
    return ((time.perf_counter() - wall) * 1e3,
            (time.process_time() - cpu) * 1e3, result)


def interleaved_medians(fns: List[Callable[[], object]],
                        repeats: List[int],
                        rounds: int = 10) -> List[Tuple[float, float, object]]:
    """Median wall and CPU times of several functions, timed in alternating
    blocks (so that load from other processes hits them alike): in each of
    ``rounds`` rounds every function is called about ``repeats[i] /
    rounds`` times in a row, after one untimed call: the first call after
    another function's pays for its memory churn (the allocator hands freed
    memory back to the system, so fresh pages fault in again), a cost of the
    alternation, not of either function. The CPU time (process time) leaves
    out time the process waited for a core."""
    results: List[object] = [None] * len(fns)
    walls: List[List[float]] = [[] for _ in fns]
    cpus: List[List[float]] = [[] for _ in fns]
    rounds = max(1, min(rounds, min(repeats)))
    for round_ in range(rounds):
        for i, fn in enumerate(fns):
            calls = ((round_ + 1) * repeats[i] // rounds -
                     round_ * repeats[i] // rounds)
            fn()  # warm-up after the other functions
            for _ in range(calls):
                wall, cpu, results[i] = timed(fn)
                walls[i].append(wall)
                cpus[i].append(cpu)
    return [(statistics.median(w), statistics.median(c), r)
            for w, c, r in zip(walls, cpus, results)]


def _child(fn, queue):
    try:
        torch.set_num_threads(1)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        queue.put(('ok', (after - before) / 1024.))
    except BaseException as error:  # report, whatever it is
        queue.put(('error', f'{type(error).__name__}: {error}'.strip()[:200]))


def peak_extra_mb(fn: Callable[[], object],
                  address_limit_gb: Optional[float] = None,
                  timeout_s: float = 900) -> Tuple[str, object]:
    """Peak RSS increase (MB) of one call, in a forked child (the child
    starts at the parent's current RSS, so the increase is the call's).
    On CUDA: the peak of allocated GPU memory over one call, in process."""
    if DEVICE.type == 'cuda':
        if address_limit_gb is not None:
            return 'error', 'not attempted on CUDA'
        _sync()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        _sync()
        return 'ok', (torch.cuda.max_memory_allocated() - base) / 2**20
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()

    def limited():
        if address_limit_gb is not None:
            with open('/proc/self/status') as status:
                vm_kb = next(
                    int(line.split()[1]) for line in status
                    if line.startswith('VmSize'))
            limit = vm_kb * 1024 + int(address_limit_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        fn()

    proc = ctx.Process(target=_child, args=(limited, queue))
    proc.start()
    proc.join(timeout_s)
    if proc.is_alive():
        proc.kill()
        return 'error', f'no result within {timeout_s:.0f} s'
    if queue.empty():
        return 'error', f'child died (exit code {proc.exitcode})'
    return queue.get()


def compare_terms(ours: Dict[str, torch.Tensor],
                  theirs: Dict[str, torch.Tensor]) -> str:
    pairs = [('loss_box', 'loss_bbox'), ('loss_obj', 'loss_obj'),
             ('loss_cls', 'loss_cls')]
    worst = max(
        abs(float(ours[a]) - float(theirs[b])) / max(abs(float(theirs[b])),
                                                     1e-12)
        for a, b in pairs)
    values = ', '.join(f'{a} {float(ours[a]):.6g} / {float(theirs[b]):.6g}'
                       for a, b in pairs)
    verdict = 'same' if worst < 1e-4 else 'differ'
    return f'{verdict} (max rel diff {worst:.1e}): {values}'


def run_loss_scenario(name: str,
                      repeats: int,
                      mmyolo_repeats: int,
                      with_backward: bool = False) -> None:
    batch_size, size, gts, num_classes, with_mmyolo = SCENARIOS[name]
    data = on_device(make_inputs(batch_size, size, gts, num_classes))
    ours = build_ours(num_classes).to(DEVICE)
    preds = official_layout(data['raw'], num_classes)

    def ours_call():
        with torch.no_grad():
            return ours(preds, data['targets'], data['input_hw'])

    head = build_mmyolo(num_classes).to(DEVICE)
    cls, box, obj = mmyolo_maps(data['raw'], num_classes)
    metas = [dict(batch_input_shape=data['input_hw'])] * batch_size

    def mmyolo_call():
        with torch.no_grad():
            return head.loss_by_feat(cls, box, obj,
                                     data['gt_pixels'].clone(), metas)

    print(f'\n[{name}] bs {batch_size}, {size}x{size}, {gts} GT/img, '
          f'nc {num_classes}')
    status, ours_mem = peak_extra_mb(ours_call)
    mem = f'{ours_mem:.0f} MB' if status == 'ok' else ours_mem
    if not with_mmyolo:
        wall, cpu, _ = interleaved_medians([ours_call], [repeats])[0]
        print(f'  ours   ComputeLossOTA: {wall:9.1f} ms wall, {cpu:9.1f} ms '
              f'CPU (median of {repeats}); peak extra memory {mem}')
        # MMYOLO's (GT x candidate x class) tensors do not fit: show it
        status, detail = peak_extra_mb(
            mmyolo_call, address_limit_gb=8, timeout_s=600)
        outcome = (f'ran, peak extra {detail:.0f} MB'
                   if status == 'ok' else f'failed: {detail}')
        print(f'  MMYOLO YOLOv7Head.loss_by_feat: not timed; one call with '
              f'8 GB of extra address space: {outcome}')
        return
    (wall, cpu, ours_out), (mm_wall, mm_cpu, mm_out) = interleaved_medians(
        [ours_call, mmyolo_call], [repeats, mmyolo_repeats])
    status, mm_mem = peak_extra_mb(mmyolo_call)
    mm_mem = f'{mm_mem:.0f} MB' if status == 'ok' else mm_mem
    print(f'  ours   ComputeLossOTA        : {wall:9.1f} ms wall, {cpu:9.1f} '
          f'ms CPU (median of {repeats}); peak extra memory {mem}')
    print(f'  MMYOLO YOLOv7Head.loss_by_feat: {mm_wall:9.1f} ms wall, '
          f'{mm_cpu:9.1f} ms CPU (median of {mmyolo_repeats}); peak extra '
          f'memory {mm_mem}')
    print(f'  speed-up: {mm_wall / wall:.1f}x wall, {mm_cpu / cpu:.1f}x CPU')
    print(f'  loss terms: {compare_terms(ours_out, mm_out)}')
    print(f'  matches: {compare_matches(ours, head, preds, data)}')
    if with_backward:
        time_backward(ours, head, data, repeats, mmyolo_repeats)


def time_backward(ours, head, data, repeats: int,
                  mmyolo_repeats: int) -> None:
    """Forward + backward from the convolution outputs, both losses."""
    num_classes = data['num_classes']
    raw = [r.detach().clone().requires_grad_() for r in data['raw']]
    metas = [dict(batch_input_shape=data['input_hw'])] * len(raw[0])

    def step(loss_fn):
        for r in raw:
            r.grad = None
        # the loss terms, as MMEngine's parse_losses sums them (not the log
        # variables)
        sum(v for k, v in loss_fn().items() if 'loss' in k).backward()

    def ours_step():
        step(lambda: ours(
            official_layout(raw, num_classes), data['targets'],
            data['input_hw']))

    def mmyolo_step():
        step(lambda: head.loss_by_feat(*mmyolo_maps(raw, num_classes), data[
            'gt_pixels'].clone(), metas))

    (wall, cpu, _), (mm_wall, mm_cpu, _) = interleaved_medians(
        [ours_step, mmyolo_step], [repeats, mmyolo_repeats])
    print(f'  forward+backward: ours {wall:.1f} ms wall / {cpu:.1f} ms CPU, '
          f'MMYOLO {mm_wall:.1f} / {mm_cpu:.1f} ms: {mm_wall / wall:.1f}x '
          f'wall, {mm_cpu / cpu:.1f}x CPU')


def compare_matches(ours, head, preds, data) -> str:
    """Compare our lead assignment with MMYOLO's (multisets of (image,
    anchor, cell, target)) and tell whether every difference is at a cell
    that occurs several times among the candidates: such copies have equal
    costs, and which copy ``torch.topk`` takes is an artifact of its sorting
    algorithm (std::partial_sort / nth_element on CPU, another on CUDA); we
    take the lowest-index copies."""
    from collections import Counter
    num_classes = data['num_classes']
    targets = data['targets']
    with torch.no_grad():
        out = ours(preds, targets, data['input_hw'], return_assignment=True)
        cls, box, obj = mmyolo_maps(data['raw'], num_classes)
        head_preds = head._merge_predict_results(box, obj, cls)
        metas = [dict(batch_input_shape=data['input_hw'])] * len(preds[0])
        normed = head._convert_gt_to_norm_format(data['gt_pixels'].clone(),
                                                 metas)
        theirs = head.assigner(head_preds, normed, data['input_hw'],
                               head.priors_base_sizes, head.grid_offset)
        cands = ours.assigner.candidates(
            targets, [tuple(p.shape[2:4]) for p in preds],
            torch.tensor(ANCHORS, dtype=torch.float32) /
            torch.tensor(STRIDES, dtype=torch.float32).view(-1, 1, 1))
    repeated = Counter(
        zip(cands.level.tolist(), cands.image.tolist(), cands.anchor.tolist(),
            cands.grid_y.tolist(), cands.grid_x.tolist()))
    # a target row is identified by its values (MMYOLO returns the values)
    row_of = {tuple(v): i for i, v in enumerate(targets.tolist())}
    differ, on_repeated, total = 0, 0, 0
    for level, cells in enumerate(out['assignment']):
        mine = Counter(
            zip(*(cells[k].tolist()
                  for k in ('image', 'anchor', 'grid_y', 'grid_x',
                            'target'))))
        info = theirs['mlvl_positive_infos'][level].tolist()
        rows = theirs['mlvl_targets_normed'][level][:, :6].tolist()
        other = Counter((b, a, gy, gx, row_of[tuple(r)])
                        for (b, a, gx, gy), r in zip(info, rows))
        total += sum(mine.values())
        for row, count in ((mine - other) + (other - mine)).items():
            differ += count
            if repeated[(level, ) + row[:4]] > 1:
                on_repeated += count
    if differ == 0:
        return f'identical ({total} matched rows)'
    return (f'{differ} of {total} matched rows differ, {on_repeated} of them '
            'at cells that occur several times among the candidates '
            '(equal-cost copies; tie order of torch.topk vs ours)')


def run_yolox_scenario(repeats: int) -> None:
    """Our batched YOLOXSimOTAAssigner against MMDetection's, image by image,
    on a YOLOX-s-sized batch (8 images, 640, 8400 priors, 80 classes)."""
    from mmdet.models.task_modules.assigners import \
        SimOTAAssigner as MMDetSimOTAAssigner
    batch_size, size, num_classes, gts_per_image = 8, 640, 80, 12
    gen = torch.Generator().manual_seed(1)
    priors = []
    for stride in STRIDES:
        n = size // stride
        y, x = torch.meshgrid(
            torch.arange(n), torch.arange(n), indexing='ij')
        xy = torch.stack([x, y], -1).view(-1, 2).float() * stride
        priors.append(torch.cat([xy + stride / 2, torch.full_like(xy, stride)],
                                1))
    priors = torch.cat(priors)
    preds, gts = [], []
    for _ in range(batch_size):
        wh = 16 + torch.rand(gts_per_image, 2, generator=gen) * 300
        centre = wh / 2 + torch.rand(gts_per_image, 2,
                                     generator=gen) * (size - wh)
        gts.append(
            InstanceData(
                bboxes=torch.cat([centre - wh / 2, centre + wh / 2], 1),
                labels=torch.randint(0, num_classes, (gts_per_image, ),
                                     generator=gen)))
        box_wh = priors[:, 2:] * torch.exp(
            torch.randn(len(priors), 2, generator=gen) * 0.7 + 1.0)
        box_xy = priors[:, :2] + torch.randn(
            len(priors), 2, generator=gen) * priors[:, 2:]
        preds.append(
            InstanceData(
                priors=priors,
                bboxes=torch.cat([box_xy - box_wh / 2, box_xy + box_wh / 2],
                                 1),
                scores=(torch.rand(len(priors), num_classes, generator=gen) *
                        torch.rand(len(priors), 1, generator=gen)).sqrt()))
    ours = TASK_UTILS.build(
        dict(type='YOLOXSimOTAAssigner', center_radius=2.5))
    with DefaultScope.overwrite_default_scope('mmdet'):
        theirs = MMDetSimOTAAssigner(center_radius=2.5)
    (ours_ms, ours_cpu, ours_res), (mm_ms, mm_cpu,
                                    mm_res) = interleaved_medians(
        [
            lambda: ours.batch_assign(preds, gts),
            lambda: [theirs.assign(p, g) for p, g in zip(preds, gts)]
        ], [repeats, repeats])
    same = all(
        torch.equal(a.gt_inds, b.gt_inds) and torch.equal(a.labels, b.labels)
        for a, b in zip(ours_res, mm_res))
    print(f'\n[yolox_s] SimOTA, bs {batch_size}, {size}x{size}, '
          f'{len(priors)} priors, {gts_per_image} GT/img, nc {num_classes}')
    print(f'  ours   YOLOXSimOTAAssigner.batch_assign: {ours_ms:8.1f} ms '
          f'wall, {ours_cpu:8.1f} ms CPU')
    print(f'  mmdet  SimOTAAssigner.assign x {batch_size}: {mm_ms:8.1f} ms '
          f'wall, {mm_cpu:8.1f} ms CPU')
    print(f'  speed-up: {mm_ms / ours_ms:.1f}x wall, {mm_cpu / ours_cpu:.1f}x '
          f'CPU; same assignment: {same}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--scenarios',
        nargs='+',
        default=list(SCENARIOS) + ['yolox_s'],
        choices=list(SCENARIOS) + ['yolox_s'])
    parser.add_argument('--repeats', type=int, default=40)
    parser.add_argument('--mmyolo-repeats', type=int, default=10)
    parser.add_argument(
        '--backward',
        action='store_true',
        help='also time forward + backward (from the conv outputs)')
    parser.add_argument(
        '--device',
        default='cpu',
        help='device of the loss scenarios: cpu (default) or cuda[:i]')
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device on this machine')
    torch.set_num_threads(1)
    where = (torch.cuda.get_device_name(DEVICE)
             if DEVICE.type == 'cuda' else 'CPU')
    print(f'torch {torch.__version__}, {torch.get_num_threads()} intra-op '
          f'thread, loss scenarios on {where}')
    for name in args.scenarios:
        try:
            if name == 'yolox_s':
                run_yolox_scenario(args.repeats)  # on the CPU
            else:
                repeats = args.repeats if SCENARIOS[name][2] < 1000 else 1
                mm_repeats = args.mmyolo_repeats if SCENARIOS[name][
                    0] > 2 else max(1, args.mmyolo_repeats // 2)
                run_loss_scenario(name, repeats, mm_repeats, args.backward)
        except Exception:  # keep going with the other scenarios
            traceback.print_exc()


if __name__ == '__main__':
    main()
