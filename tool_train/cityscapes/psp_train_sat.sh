#!/bin/sh
# Train pspnet50 with SAT on cityscapes: sh tool_train/cityscapes/psp_train_sat.sh [key value ...]
exec sh tool_train/train.sh cityscapes pspnet50_sat config/cityscapes/cityscapes_pspnet50_sat.yaml "$@"
