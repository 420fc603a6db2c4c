# yolov7-tiny: the official model and training recipe (hyp.scratch.tiny) on
# COCO.
_base_ = ['./_base_/models/yolov7_tiny.py', './_base_/yolov7_recipe_tiny.py']
model = _base_.recipe_model  # the recipe's classes and hyp loss settings
