"""One-call re-parameterization of a YOLOv7 model for deployment."""
import torch
import torch.nn as nn
from mmcv.cnn import fuse_conv_bn

from mmyolo_ext.models.layers import RepConv


@torch.no_grad()
def reparameterize(model: nn.Module) -> nn.Module:
    """Fuse a YOLOv7 model for inference, in place.

    * every :class:`RepConv` becomes one biased 3x3 conv;
    * ImplicitA / ImplicitM are folded into the head's 1x1 convs and removed;
    * the auxiliary head and the neck convs feeding it (P6 models) are
      removed: inference uses the lead head only;
    * every BatchNorm is folded into the conv before it.

    The model is put in eval mode first: BatchNorm folding uses the running
    statistics, so the fused model computes the eval-mode function of the
    original one. The result cannot be trained further.

    Args:
        model (nn.Module): A detector (or any module) built from mmyolo_ext
            YOLOv7 components.

    Returns:
        nn.Module: ``model`` itself.
    """
    model.eval()
    for module in list(model.modules()):
        if isinstance(module, RepConv):
            module.switch_to_deploy()
    for module in list(model.modules()):
        fuse_implicit = getattr(module, 'fuse_implicit', None)
        if callable(fuse_implicit):
            fuse_implicit()
        remove_aux = getattr(module, 'remove_aux', None)
        if callable(remove_aux):
            remove_aux()
    fuse_conv_bn(model)
    return model
