#!/bin/sh
# Train aspp with DDC-AT on cityscapes: sh tool_train/cityscapes/aspp_train_ddcat.sh [key value ...]
exec sh tool_train/train.sh cityscapes aspp_ddcat config/cityscapes/cityscapes_aspp_ddcat.yaml "$@"
