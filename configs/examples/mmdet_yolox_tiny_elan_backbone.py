# MMDetection's own YOLOX-tiny config, as installed, with its CSPDarknet
# backbone replaced by mmyolo_ext's ELANBackbone (yolov7-tiny's backbone):
#
#   python tools/train.py configs/examples/mmdet_yolox_tiny_elan_backbone.py
#
# Everything else (YOLOX's neck, head, SimOTA, pipeline, schedule) is
# MMDetection's; the default scope stays 'mmdet' and custom_imports is all
# it takes to reach ELANBackbone under its plain name.
_base_ = 'mmdet::yolox/yolox_tiny_8xb8-300e_coco.py'
custom_imports = dict(imports=['mmyolo_ext'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='ELANBackbone', arch='tiny'),
    # ELANBackbone('tiny') gives 128/256/512 channels at strides 8/16/32
    neck=dict(in_channels=[128, 256, 512]))
