#!/bin/sh
# Train UperNet-ConvNeXt-T on ade20k with PIR-AT's recipe, clean (its counterpart) (config/ade20k/ade20k_upernet_convnext_t_clean.yaml):
# sh tool_train/ade20k/upernet_convnext_t_train_clean.sh [key value ...]
exec sh tool_train/train.sh ade20k upernet_convnext_t_clean config/ade20k/ade20k_upernet_convnext_t_clean.yaml "$@"
