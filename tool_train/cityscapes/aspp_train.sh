#!/bin/sh
# Train aspp on cityscapes: sh tool_train/cityscapes/aspp_train.sh [key value ...]
exec sh tool_train/train.sh cityscapes aspp config/cityscapes/cityscapes_aspp.yaml "$@"
