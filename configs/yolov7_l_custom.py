# yolov7 (L) on your own data in the official YOLO layout (data.yaml +
# images/ + labels/*.txt): the model of models/yolov7_l.py and the custom
# recipe (_base_/yolov7_recipe_custom.py: hyp.scratch.custom, adapted to
# small data; read its header). The only required edit is data_yaml (and,
# to fine-tune, load_from), or give them on the command line:
#
#   python tools/train.py configs/yolov7_l_custom.py --cfg-options \
#       data_yaml=path/to/data.yaml max_epochs=100 \
#       train_batch_size_per_gpu=8 'img_scale=(640, 640)' \
#       load_from=work_dirs/yolov7_training_mmyolo_ext.pth
#
# cache_images='ram' (or 'disk') keeps the decoded images for the next
# epochs, as the official --cache-images.
_base_ = ['./_base_/models/yolov7_l.py', './_base_/yolov7_recipe_custom.py']

model = _base_.recipe_model  # the recipe's classes and hyp loss settings
