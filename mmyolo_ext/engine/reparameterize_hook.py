import torch
from mmengine.hooks import EMAHook, Hook
from mmengine.model import is_model_wrapper

from mmyolo_ext.registry import HOOKS


@HOOKS.register_module()
class ReparameterizeHook(Hook):
    """Re-parameterize the model for deployment before it is tested.

    ``before_test`` runs after the runner has loaded the checkpoint, so the
    trained weights are what gets fused (RepConv branches into one 3x3 conv,
    BatchNorm into the convs, ImplicitA/M into the head convs, the P6 aux
    head removed; see :func:`mmyolo_ext.deploy.reparameterize`).
    ``tools/test.py --deploy`` adds this hook; a config may also list it in
    ``custom_hooks``.

    An EMA hook leaves the test run: the checkpoint's ``state_dict`` already
    holds the EMA weights (EMAHook swaps them in when it saves), and its
    parameter swaps before and after testing cannot apply to the fused model,
    whose parameters differ in number and shape.

    Args:
        before_load (bool): Fuse in ``before_run``, before the runner loads
            the checkpoint: for a deploy checkpoint (fused weights, written
            by ``tools/model_converters/reparameterize.py``), which only fits the fused
            model. ``tools/test.py`` sets it when the checkpoint's meta says
            deploy. Defaults to False (fuse the loaded training weights).
        channels_last (bool): Put the fused model in the channels-last
            memory format (its convs then run in it; measured by
            ``benchmarks/deploy.py``: the fastest CPU variant, same
            outputs). Defaults to True.
    """

    def __init__(self, before_load: bool = False,
                 channels_last: bool = True) -> None:
        self.before_load = before_load
        self.channels_last = channels_last
        self._fused = False

    def before_run(self, runner) -> None:
        if self.before_load:
            self._reparameterize(runner)

    def before_test(self, runner) -> None:
        self._reparameterize(runner)

    def _reparameterize(self, runner) -> None:
        if self._fused:
            return
        self._fused = True
        from mmyolo_ext.deploy import reparameterize
        ema_hooks = [h for h in runner.hooks if isinstance(h, EMAHook)]
        if ema_hooks:
            runner._hooks = [h for h in runner.hooks if h not in ema_hooks]
            runner.logger.info('Testing the EMA weights the checkpoint holds '
                               f'as its state_dict; {len(ema_hooks)} EMA '
                               'hook(s) left out of the re-parameterized run')
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        reparameterize(model)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        runner.logger.info('Model re-parameterized for deployment' +
                           (' (channels_last)' if self.channels_last else ''))
