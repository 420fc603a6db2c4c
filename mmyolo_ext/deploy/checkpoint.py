"""Build a detector from a config and load a training or deploy checkpoint.

A deploy checkpoint (written by ``tools/model_converters/reparameterize.py``) holds the weights
of the re-parameterized model and says so in its meta:
``meta['mmyolo_ext']['deploy'] is True``. Its state dict only fits a model
that is already fused, so :func:`load_detector` re-parameterizes the freshly
built model before loading it. A training checkpoint is loaded as it is, and
fused afterwards when asked (``deploy=True``).
"""
import copy
from typing import Optional, Union

import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner.checkpoint import _load_checkpoint

from ..engine.checkpoint_files import check_checkpoint_file
from .reparameterize import reparameterize

META_KEY = 'mmyolo_ext'  # checkpoint['meta'][META_KEY]['deploy'] marks it


def read_checkpoint(checkpoint: Union[str, dict]) -> dict:
    """The checkpoint dict of a path or URL (mmengine's loaders), on CPU.

    Raises:
        ValueError: The file holds no state dict, or is truncated
            (:class:`~mmyolo_ext.engine.checkpoint_files.DamagedCheckpointError`,
            which names it).
    """
    if isinstance(checkpoint, dict):
        return checkpoint
    if '://' not in checkpoint:  # a local file: no zip/unpickling error
        check_checkpoint_file(checkpoint)
    ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    if not isinstance(ckpt, dict):
        raise ValueError(f'{checkpoint}: not a checkpoint (a dict with a '
                         f'state_dict), got {type(ckpt).__name__}')
    return ckpt


def is_deploy_checkpoint(checkpoint: Union[str, dict]) -> bool:
    """Whether a checkpoint holds re-parameterized (fused) weights."""
    meta = read_checkpoint(checkpoint).get('meta') or {}
    return bool((meta.get(META_KEY) or {}).get('deploy', False))


def checkpoint_state_dict(ckpt: dict, weights: str = 'ema') -> dict:
    """The model weights of a checkpoint, without a ``module.`` prefix.

    MMEngine's ``EMAHook`` swaps the averaged weights into ``state_dict``
    when it saves, and puts the raw training weights into ``ema_state_dict``
    as ``module.<name>`` (next to its ``steps`` counter); resuming swaps
    them back. So ``state_dict`` holds the EMA weights, the ones evaluated
    during training.

    Args:
        ckpt (dict): The checkpoint.
        weights (str): ``'ema'`` (default): the EMA weights where the
            checkpoint has them, else its only weights; ``'model'``: the raw
            training weights (``ema_state_dict``'s ``module.*`` entries where
            an EMA hook saved the checkpoint, else ``state_dict``).
    """
    if weights not in ('ema', 'model'):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    state_dict = ckpt.get('state_dict', ckpt)
    if weights == 'model' and 'ema_state_dict' in ckpt:
        state_dict = {
            k: v
            for k, v in ckpt['ema_state_dict'].items()
            if k.startswith('module.')
        }
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError('the checkpoint has no state_dict')
    return {
        (k[len('module.'):] if k.startswith('module.') else k): v
        for k, v in state_dict.items()
    }


def _dataset_meta_from_config(cfg: Config) -> Optional[dict]:
    """The classes (and palette) the config's test dataset declares."""
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    while 'dataset' in dataset:  # dataset wrappers
        dataset = dataset['dataset']
    if dataset.get('metainfo'):
        return dict(dataset['metainfo'])
    if not dataset:
        return None
    from mmengine.registry import DATASETS
    with DATASETS.switch_scope_and_registry(
            cfg.get('default_scope')) as registry:
        dataset_cls = registry.get(dataset['type'])
    metainfo = getattr(dataset_cls, 'METAINFO', None)
    return copy.deepcopy(dict(metainfo)) if metainfo else None


def load_detector(config: Union[str, Config],
                  checkpoint: Optional[Union[str, dict]] = None,
                  device: str = 'cpu',
                  deploy: Optional[bool] = None,
                  cfg_options: Optional[dict] = None,
                  weights: str = 'ema') -> nn.Module:
    """Build the config's detector and load a checkpoint into it.

    Args:
        config (str | Config): Config file path or object.
        checkpoint (str | dict, optional): Checkpoint path / URL / dict.
            A deploy checkpoint is loaded into a re-parameterized model.
            None leaves the initial weights (for tests).
        device (str): Device to put the model on. Defaults to 'cpu'.
        deploy (bool, optional): True re-parameterizes the model after
            loading a training checkpoint; False refuses a deploy
            checkpoint; None (default) follows the checkpoint.
        cfg_options (dict, optional): Overrides merged into the config.
        weights (str): ``'ema'`` (default) or ``'model'``: which weights of
            a training checkpoint saved with EMA (see
            :func:`checkpoint_state_dict`).

    Returns:
        nn.Module: The detector in eval mode, with ``cfg`` (the config) and
        ``dataset_meta`` (``classes`` ...: the checkpoint's, else the
        config's test dataset's) set.

    Raises:
        ValueError: The checkpoint's weights do not fit the model (the
            missing and unexpected keys are named).
    """
    import mmyolo_ext  # noqa: F401  (registers our modules)
    if isinstance(config, str):
        cfg = Config.fromfile(config)
    else:
        cfg = copy.deepcopy(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(cfg.model)

    ckpt = read_checkpoint(checkpoint) if checkpoint is not None else {}
    fused_weights = bool(ckpt) and is_deploy_checkpoint(ckpt)
    if fused_weights and deploy is False:
        raise ValueError(f'{checkpoint} is a deploy checkpoint (fused '
                         'weights); it only loads into the fused model')
    if fused_weights:
        reparameterize(model)  # shapes of the fused model, then its weights
    if ckpt:
        result = model.load_state_dict(
            checkpoint_state_dict(ckpt, weights), strict=False)
        if result.missing_keys or result.unexpected_keys:
            kind = 'deploy' if fused_weights else 'training'
            raise ValueError(
                f'{checkpoint} ({kind} checkpoint) does not fit the model '
                f'of the config: {len(result.missing_keys)} missing keys '
                f'{result.missing_keys[:5]}, {len(result.unexpected_keys)} '
                f'unexpected keys {result.unexpected_keys[:5]}')
    if deploy and not fused_weights:
        reparameterize(model)

    meta = ckpt.get('meta') or {}
    model.cfg = cfg
    model.dataset_meta = (
        copy.deepcopy(meta['dataset_meta']) if meta.get('dataset_meta') else
        _dataset_meta_from_config(cfg))
    return model.to(device).eval()


def deploy_checkpoint(model: nn.Module, source: Optional[dict] = None,
                      **info) -> dict:
    """A deploy checkpoint of a re-parameterized model.

    Keeps the source checkpoint's meta (``dataset_meta``, epoch, ...) and
    marks it as deploy; optimizer, scheduler, message hub and EMA states are
    left out (the fused model cannot be trained).

    Args:
        model (nn.Module): The re-parameterized detector.
        source (dict, optional): The training checkpoint it comes from.
        **info: More entries of ``meta['mmyolo_ext']`` (e.g. ``weights``).
    """
    meta = copy.deepcopy((source or {}).get('meta') or {})
    if getattr(model, 'dataset_meta', None) and not meta.get('dataset_meta'):
        meta['dataset_meta'] = copy.deepcopy(model.dataset_meta)
    meta[META_KEY] = dict(meta.get(META_KEY) or {}, deploy=True, **info)
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return dict(meta=meta, state_dict=state_dict)
