# A plain mmengine config run with mmyolo_ext imported: 3 epochs of 8
# iterations of the toy model (a NaN sample: one skipped step an epoch),
# summed accumulation over 3 iterations, a linear warm-up then a step of
# the lr, EMA, mid-epoch resume, and a checkpoint after every iteration
# through mmengine's default hook name.
default_scope = 'mmengine'
custom_imports = dict(
    imports=['mmyolo_ext', 'toy_modules'], allow_failed_imports=False)
model = dict(type='CompatToyModel')
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ToyDatasetWithNaN'))
optim_wrapper = dict(
    type='mmyolo_ext.SummedAccumulationOptimWrapper',
    accumulative_counts=3,
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=6),
    dict(type='MultiStepLR', by_epoch=False, milestones=[15])
]
train_cfg = dict(type='mmyolo_ext.ResumableEpochBasedTrainLoop', max_epochs=3)
default_hooks = dict(
    checkpoint=dict(
        type='CheckpointHook', interval=1, by_epoch=False, max_keep_ckpts=2),
    logger=dict(type='LoggerHook', interval=1))
custom_hooks = [
    dict(type='EMAHook', momentum=0.1),
    dict(type='SampleOrderHook')
]
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0, deterministic=True)
log_level = 'INFO'
