#!/bin/sh
# Train aspp with SAT on cityscapes: sh tool_train/cityscapes/aspp_train_sat.sh [key value ...]
exec sh tool_train/train.sh cityscapes aspp_sat config/cityscapes/cityscapes_aspp_sat.yaml "$@"
