#!/bin/sh
# Train pspnet50 with DDC-AT on cityscapes: sh tool_train/cityscapes/psp_train_ddcat.sh [key value ...]
exec sh tool_train/train.sh cityscapes pspnet50_ddcat config/cityscapes/cityscapes_pspnet50_ddcat.yaml "$@"
