# yolov7 (L): the official model and training recipe (hyp.scratch.p5) on COCO.
_base_ = ['./_base_/models/yolov7_l.py', './_base_/yolov7_recipe_p5.py']
model = _base_.recipe_model  # the recipe's classes and hyp loss settings
