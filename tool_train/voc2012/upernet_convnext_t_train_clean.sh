#!/bin/sh
# Train UperNet-ConvNeXt-T on voc2012 with PIR-AT's recipe, clean (its counterpart) (config/voc2012/voc2012_upernet_convnext_t_clean.yaml):
# sh tool_train/voc2012/upernet_convnext_t_train_clean.sh [key value ...]
exec sh tool_train/train.sh voc2012 upernet_convnext_t_clean config/voc2012/voc2012_upernet_convnext_t_clean.yaml "$@"
