#!/bin/sh
# Train UperNet-ConvNeXt-S on voc2012 with PIR-AT's recipe, clean (its counterpart) (config/voc2012/voc2012_upernet_convnext_s_clean.yaml):
# sh tool_train/voc2012/upernet_convnext_s_train_clean.sh [key value ...]
exec sh tool_train/train.sh voc2012 upernet_convnext_s_clean config/voc2012/voc2012_upernet_convnext_s_clean.yaml "$@"
