"""Fine-tuning from a checkpoint of another class count (issue 10, item 3):
a converted official 80-class checkpoint loads into 3- and 1-class models,
the box and objectness channels of every anchor kept, the class channels
re-initialized with the official prior; frozen backbone stages.

The 80-class checkpoint is a fake official yolov7-tiny training state dict
(random values, the official keys and shapes) put through the converter, as
users do with ``tools/model_converters/convert_yolov7_weights.py``.
"""
import copy
import logging
import math
import re

import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.runner import Runner, load_checkpoint
from helpers.official_models import (build_model, load_manifest,
                                   random_official_state_dict)
from helpers.tiny_demo import tiny_demo_cfg

from mmyolo_ext.models.dense_heads import IDetectHeadModule
from helpers.tools import load_tool

NUM_ANCHORS = 3
SOURCE_CLASSES = 80
# per-anchor tensors of the detect layer: key pattern -> channel dimension
PER_ANCHOR = {
    re.compile(r'head_module\.(lead|aux)_convs\.\d+\.(weight|bias)$'): 0,
    re.compile(r'head_module\.implicit_m\.\d+\.implicit$'): 1,
}


def channel_dim(key: str):
    for pattern, dim in PER_ANCHOR.items():
        if pattern.search(key):
            return dim
    return None


def per_anchor(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """(anchor, 5 + nc, ...) view of a per-anchor tensor."""
    t = tensor.movedim(dim, 0)
    return t.reshape(NUM_ANCHORS, -1, *t.shape[1:])


@pytest.fixture(scope='module')
def converted_checkpoint(tmp_path_factory):
    tool = load_tool('tools/model_converters/convert_yolov7_weights.py')
    official = random_official_state_dict(load_manifest('tiny', 'training'))
    state_dict, arch, _ = tool.detect_and_convert(official)
    assert arch == 'tiny'
    path = tmp_path_factory.mktemp('ckpt') / 'yolov7_tiny_80.pth'
    torch.save(dict(state_dict=state_dict, meta=dict(num_classes=80)), path)
    return path, state_dict


class LogRecords(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def class_bias_bound(conv: nn.Conv2d) -> float:
    """PyTorch's default bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return 1 / math.sqrt(conv.in_channels * math.prod(conv.kernel_size))


def check_loaded(source: dict, fresh: dict, loaded: dict, num_classes: int):
    """Per-anchor tensors: box/obj channels = source, class channels =
    fresh; every other tensor = source. Returns the adapted keys."""
    adapted = []
    for key, value in loaded.items():
        dim = channel_dim(key)
        if dim is None:
            assert torch.equal(value, source[key].to(value.dtype)), key
            continue
        adapted.append(key)
        got = per_anchor(value, dim)
        assert got.shape[1] == 5 + num_classes
        assert torch.equal(got[:, :5], per_anchor(source[key], dim)[:, :5])
        assert torch.equal(got[:, 5:], per_anchor(fresh[key], dim)[:, 5:])
    return adapted


@pytest.mark.parametrize('num_classes', [3, 1])
def test_80_class_checkpoint_loads_into_other_class_counts(
        converted_checkpoint, num_classes):
    path, source = converted_checkpoint
    torch.manual_seed(0)
    model = build_model('tiny', num_classes=num_classes)
    model.init_weights()  # the runner initializes, then loads load_from
    fresh = copy.deepcopy(model.state_dict())
    records = LogRecords()
    logger = MMLogger.get_current_instance()
    logger.addHandler(records)
    try:
        # what the runner's load_from does (strict=False)
        load_checkpoint(model, str(path), map_location='cpu', strict=False)
    finally:
        logger.removeHandler(records)
    loaded = model.state_dict()
    assert loaded.keys() == source.keys()
    adapted = check_loaded(source, fresh, loaded, num_classes)
    assert len(adapted) == 9  # 3 levels: conv weight, conv bias, ImplicitM

    # the fresh class channels carry the official prior on the bias
    prior = math.log(0.6 / (num_classes - 0.99))
    for conv in model.bbox_head.head_module.lead_convs:
        cls_bias = conv.bias.detach().view(NUM_ANCHORS, -1)[:, 5:]
        assert ((cls_bias - prior).abs() <= class_bias_bound(conv)).all()

    # the log names every adapted tensor, and nothing went unloaded
    log = '\n'.join(records.messages)
    for key in adapted:
        assert key in log
    assert 'size mismatch' not in log and 'missing keys' not in log


def test_uninitialized_head_gets_the_class_prior_and_aux_convs_adapt():
    """A head loaded before init_weights (e.g. a model loaded by a script)
    gets the class prior too; the auxiliary convs are adapted as the lead
    ones; strict torch loading works."""
    kwargs = dict(in_channels=[8, 16], aux_in_channels=[8, 16],
                  featmap_strides=(8, 16))
    source = IDetectHeadModule(num_classes=SOURCE_CLASSES, **kwargs)
    source.init_weights()
    source = source.state_dict()
    head = IDetectHeadModule(num_classes=2, **kwargs)
    fresh = copy.deepcopy(head.state_dict())
    head.load_state_dict(source, strict=True)
    loaded = head.state_dict()
    prior = math.log(0.6 / (2 - 0.99))
    for key, value in loaded.items():
        full = 'head_module.' + key
        dim = channel_dim(full)
        if dim is None:
            assert torch.equal(value, source[key])
            continue
        got = per_anchor(value, dim)
        assert torch.equal(got[:, :5], per_anchor(source[key], dim)[:, :5])
        expected = per_anchor(fresh[key], dim)[:, 5:]
        if key.endswith('bias'):
            expected = expected + prior
        torch.testing.assert_close(got[:, 5:], expected, rtol=0, atol=1e-6)
    assert any(k.startswith('aux_convs') for k in loaded)


def test_other_mismatches_are_still_reported():
    """Only the per-anchor layout is adapted: another input width is the
    usual size error."""
    source = IDetectHeadModule(num_classes=SOURCE_CLASSES, in_channels=[8],
                               featmap_strides=(8, ))
    head = IDetectHeadModule(num_classes=2, in_channels=[16],
                             featmap_strides=(8, ))
    with pytest.raises(RuntimeError, match='size mismatch'):
        head.load_state_dict(source.state_dict(), strict=True)


class TrainingStarted(Exception):
    pass


class RecordLoadedStateHook(Hook):
    """Records the model and EMA states when training starts (after
    load_from), then stops the run."""

    def before_train(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model,
                                               'module') else runner.model
        self.model_state = copy.deepcopy(model.state_dict())
        ema, = [h for h in runner.hooks if hasattr(h, 'ema_model')]
        self.ema_state = copy.deepcopy(ema.ema_model.module.state_dict())
        raise TrainingStarted


def test_load_from_in_a_config(converted_checkpoint, tmp_path):
    """The normal path: ``load_from`` in the (3-class) demo config."""
    path, source = converted_checkpoint
    cfg = tiny_demo_cfg(tmp_path, images=2, batch=2, img_size=64)
    cfg.load_from = str(path)
    runner = Runner.from_cfg(cfg)
    hook = RecordLoadedStateHook()
    runner.register_hook(hook, priority='LOWEST')
    with pytest.raises(TrainingStarted):
        runner.train()
    for state in (hook.model_state, hook.ema_state):
        for key, value in state.items():
            if key not in source:  # the loss's buffers
                assert key.startswith('bbox_head.loss_module')
                continue
            dim = channel_dim(key)
            if dim is None:
                assert torch.equal(value, source[key].to(value.dtype)), key
            else:
                got, src = per_anchor(value, dim), per_anchor(source[key], dim)
                assert got.shape[1] == 5 + 3
                assert torch.equal(got[:, :5], src[:, :5]), key


# --------------------------------------------------------------------------
# frozen backbone stages (the official --freeze)


def build_tiny(frozen_stages: int, device: str = 'cpu'):
    """yolov7-tiny (3 classes, with its loss) from the base model config."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmyolo.registry import MODELS
    from helpers.paths import ROOT
    cfg = Config.fromfile(
        str(ROOT / 'configs' / '_base_' / 'models' / 'yolov7_tiny.py'))
    init_default_scope(cfg.default_scope)
    cfg.model.bbox_head.head_module.num_classes = 3
    cfg.model.backbone.frozen_stages = frozen_stages
    with torch.device(device):
        return MODELS.build(cfg.model)


def one_training_step(model, optim_wrapper, seed: int = 0) -> None:
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.rand(2, 3, 64, 64, generator=gen)
    samples = []
    for _ in range(2):
        sample = DetDataSample(metainfo=dict(batch_input_shape=(64, 64)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[8., 8., 40., 36.], [20., 30., 60., 62.]]),
            labels=torch.tensor([0, 2]))
        samples.append(sample)
    losses = model.loss(inputs, samples)
    optim_wrapper.backward(model.parse_losses(losses)[0])
    optim_wrapper.step()  # one optimizer step, whatever the accumulation
    optim_wrapper.zero_grad()


def test_frozen_stages_keep_weights_and_statistics():
    """One step of the COCO tiny recipe's optimizer (SGD, momentum, weight
    decay) changes nothing in the frozen stem and stages 1-2."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from helpers.paths import ROOT
    torch.manual_seed(0)
    model = build_tiny(frozen_stages=2)
    model.init_weights()
    model.train()  # applies the freeze, as the runner's loop does
    cfg = Config.fromfile(str(ROOT / 'configs' / 'yolov7_tiny_coco.py'))
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = copy.deepcopy(model.state_dict())
    one_training_step(model, optim_wrapper)
    after = model.state_dict()

    frozen = ('backbone.stem.', 'backbone.stage1.', 'backbone.stage2.')
    frozen_keys = [k for k in before if k.startswith(frozen)]
    assert frozen_keys
    for key in frozen_keys:  # weights and BatchNorm statistics
        assert torch.equal(before[key], after[key]), key
    for name, param in model.named_parameters():
        assert param.requires_grad == (not name.startswith(frozen)), name
    changed = [k for k in before if not k.startswith(frozen)
               and not torch.equal(before[k], after[k])]
    for part in ('backbone.stage3.', 'neck.', 'bbox_head.'):
        assert any(k.startswith(part) for k in changed), part
    assert any(k.startswith('backbone.stage3.') and 'running_mean' in k
               for k in changed)


def test_bad_frozen_stages_is_refused():
    with pytest.raises(ValueError, match='frozen_stages=5'):
        build_tiny(frozen_stages=5, device='meta')


# --------------------------------------------------------------------------
# the official --single-cls


def test_single_cls_makes_a_one_class_model_and_dataset(tmp_path):
    """``--cfg-options single_cls=True`` in the custom configs: every label
    class 0, one class named 'item', a one-class head (scored by objectness
    alone, no class loss: nothing else to set on the model side)."""
    from mmyolo_ext.demo_data import (export_yolo_layout,
                                      generate_shapes_dataset)
    from mmyolo_ext.engine.config_variables import load_config
    from mmyolo_ext.registry import DATASETS
    from helpers.paths import ROOT
    generate_shapes_dataset(str(tmp_path / 'shapes'), num_train=3,
                            num_val=2, img_size=96, seed=3)
    data_yaml = export_yolo_layout(str(tmp_path / 'shapes'),
                                   str(tmp_path / 'yolo'))
    cfg = load_config(
        str(ROOT / 'configs' / 'yolov7_tiny_custom.py'),
        dict(data_yaml=data_yaml, single_cls=True))
    assert cfg.model.bbox_head.head_module.num_classes == 1
    assert cfg.class_names == ('item', )
    for loader in (cfg.train_dataloader, cfg.val_dataloader,
                   cfg.test_dataloader):
        dataset_cfg = dict(loader.dataset, pipeline=[])
        dataset_cfg.pop('batch_shapes_cfg', None)
        dataset = DATASETS.build(dataset_cfg)
        assert dataset.metainfo['classes'] == ('item', )
        labels = [inst['bbox_label'] for i in range(len(dataset))
                  for inst in dataset.get_data_info(i)['instances']]
        assert labels and set(labels) == {0}
    plain = load_config(
        str(ROOT / 'configs' / 'yolov7_tiny_custom.py'),
        dict(data_yaml=data_yaml))
    assert plain.model.bbox_head.head_module.num_classes == 3
