#!/bin/sh
# Train UperNet-ConvNeXt-T on ade20k with PIR-AT's recipe (config/ade20k/ade20k_upernet_convnext_t_pirat.yaml):
# sh tool_train/ade20k/upernet_convnext_t_train_pirat.sh [key value ...]
exec sh tool_train/train.sh ade20k upernet_convnext_t_pirat config/ade20k/ade20k_upernet_convnext_t_pirat.yaml "$@"
