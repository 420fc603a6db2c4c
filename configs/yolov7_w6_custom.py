# yolov7-w6 on your own data in the official YOLO layout: the data and
# command line of yolov7_l_custom.py (read its header), the P6 model of
# models/yolov7_w6.py (four levels P3-P6, strides 8..64, the lead head
# plus the auxiliary head trained with AuxOTA: V7AuxAssigner candidates,
# aux terms weighted 0.25; inference uses the lead head only) and the
# custom recipe at 1280 (_base_/yolov7_recipe_custom_p6.py: hyp.scratch.custom
# as the official P6 fine-tuning command; the loss scales its gains for four
# levels).
#
#   python tools/model_converters/convert_yolov7_weights.py yolov7-w6_training.pt \
#       work_dirs/yolov7_w6_official.pth  # with the aux head: fine-tunes all
#   python tools/train.py configs/yolov7_w6_custom.py --cfg-options \
#       data_yaml=path/to/data.yaml max_epochs=100 \
#       load_from=work_dirs/yolov7_w6_official.pth
_base_ = [
    './_base_/models/yolov7_w6.py', './_base_/yolov7_recipe_custom_p6.py'
]

model = _base_.recipe_model  # the recipe's classes and hyp loss settings
