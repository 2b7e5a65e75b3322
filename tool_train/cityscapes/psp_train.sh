#!/bin/sh
# Train pspnet50 on cityscapes: sh tool_train/cityscapes/psp_train.sh [key value ...]
exec sh tool_train/train.sh cityscapes pspnet50 config/cityscapes/cityscapes_pspnet50.yaml "$@"
