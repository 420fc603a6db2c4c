# yolov7-tiny on your own data in the official YOLO layout: the model of
# models/yolov7_tiny.py and the custom recipe (read yolov7_l_custom.py's
# header). The loss gains stay those of hyp.scratch.custom (box 0.05, cls
# 0.3, obj 0.7), as the official train.py uses that hyp file for any model.
#
#   python tools/train.py configs/yolov7_tiny_custom.py --cfg-options \
#       data_yaml=path/to/data.yaml max_epochs=100
_base_ = [
    './_base_/models/yolov7_tiny.py', './_base_/yolov7_recipe_custom.py'
]

model = _base_.recipe_model  # the recipe's classes and hyp loss settings
