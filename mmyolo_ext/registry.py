"""Registries of mmyolo_ext.

Every registry here is a child of MMEngine's root registry with the scope
``mmyolo_ext``, beside MMDetection's and MMYOLO's (mmengine resolves a scope
prefix only among the root's children), so ``type='mmyolo_ext.SimOTAAssigner'``
reaches our module from any scope. :func:`export_to_peer_scopes` also registers each of our modules in
the MMYOLO and MMDetection registries under its plain name, so a config whose
``default_scope`` is ``mmyolo`` or ``mmdet`` can say ``type='ELANBackbone'``.
A name a peer already owns (MMDetection's ``SimOTAAssigner``) is never
overwritten there: the peer's module keeps its name and ours stays reachable
with the ``mmyolo_ext.`` prefix.
"""
from mmdet import registry as mmdet_registry
from mmengine import registry as mmengine_registry
from mmengine.registry import Registry
from mmyolo import registry as mmyolo_registry

SCOPE = 'mmyolo_ext'


def _child(parent: Registry, location: str) -> Registry:
    return Registry(
        parent.name, parent=parent, scope=SCOPE, locations=[location])


MODELS = _child(mmengine_registry.MODELS, 'mmyolo_ext.models')
TASK_UTILS = _child(mmengine_registry.TASK_UTILS, 'mmyolo_ext.models')
HOOKS = _child(mmengine_registry.HOOKS, 'mmyolo_ext.engine')
LOOPS = _child(mmengine_registry.LOOPS, 'mmyolo_ext.engine')
OPTIM_WRAPPER_CONSTRUCTORS = _child(
    mmengine_registry.OPTIM_WRAPPER_CONSTRUCTORS, 'mmyolo_ext.engine')
OPTIM_WRAPPERS = _child(mmengine_registry.OPTIM_WRAPPERS, 'mmyolo_ext.engine')
DATASETS = _child(mmengine_registry.DATASETS, 'mmyolo_ext.datasets')
TRANSFORMS = _child(mmengine_registry.TRANSFORMS, 'mmyolo_ext.datasets')

# our registry -> the peer registries that also get our plain names
_PEERS = {
    MODELS: (mmyolo_registry.MODELS, mmdet_registry.MODELS),
    TASK_UTILS: (mmyolo_registry.TASK_UTILS, mmdet_registry.TASK_UTILS),
    HOOKS: (mmyolo_registry.HOOKS, mmdet_registry.HOOKS),
    LOOPS: (mmyolo_registry.LOOPS, mmdet_registry.LOOPS),
    OPTIM_WRAPPER_CONSTRUCTORS:
    (mmyolo_registry.OPTIM_WRAPPER_CONSTRUCTORS,
     mmdet_registry.OPTIM_WRAPPER_CONSTRUCTORS),
    OPTIM_WRAPPERS:
    (mmyolo_registry.OPTIM_WRAPPERS, mmdet_registry.OPTIM_WRAPPERS),
    DATASETS: (mmyolo_registry.DATASETS, mmdet_registry.DATASETS),
    TRANSFORMS: (mmyolo_registry.TRANSFORMS, mmdet_registry.TRANSFORMS),
}


def export_to_peer_scopes() -> None:
    """Register every mmyolo_ext module in the MMYOLO and MMDetection
    registries under its plain name, unless the peer already has that name.

    Idempotent: called by ``import mmyolo_ext`` after all modules are defined.
    """
    for ours, peers in _PEERS.items():
        for peer in peers:
            # load the peer's own modules first, so a name it owns is seen as
            # taken (and its later lazy import cannot collide with ours)
            peer.import_from_location()
            for name, module in ours.module_dict.items():
                if name not in peer.module_dict:
                    peer.register_module(name=name, module=module)
