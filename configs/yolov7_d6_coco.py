# yolov7-d6: the official model (with the auxiliary head and the AuxOTA
# loss) and training recipe (hyp.scratch.p6, train_aux.py) on COCO at 1280.
_base_ = ['./_base_/models/yolov7_d6.py', './_base_/yolov7_recipe_p6.py']
model = _base_.recipe_model  # the recipe's classes and hyp loss settings
