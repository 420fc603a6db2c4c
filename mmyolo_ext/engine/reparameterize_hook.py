from mmengine.hooks import Hook
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
    """

    priority = 'VERY_LOW'  # after EMA hooks have swapped in their weights

    def before_test(self, runner) -> None:
        from mmyolo_ext.deploy import reparameterize
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        reparameterize(model)
        runner.logger.info('Model re-parameterized for deployment')
