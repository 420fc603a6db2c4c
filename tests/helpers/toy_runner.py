# A plain mmengine config (no mmyolo_ext inside): 8 iterations of the toy
# model, a checkpoint every 2 iterations, the lr divided by 10 after 5.
default_scope = 'mmengine'
custom_imports = dict(imports=['toy_modules'], allow_failed_imports=False)
model = dict(type='CompatToyModel')
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='CompatToyDataset'))
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9))
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[5])]
train_cfg = dict(by_epoch=False, max_iters=8)
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
    logger=dict(type='LoggerHook', interval=1))
env_cfg = dict(dist_cfg=dict(backend='nccl'))  # as mmdet/mmyolo configs say
custom_hooks = [dict(type='KillAfterIterHook')]  # only with TOY_KILL_AT set
randomness = dict(seed=0, deterministic=True)
log_level = 'INFO'
