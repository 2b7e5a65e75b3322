#!/bin/sh
# Train UperNet-ConvNeXt-T (patch stem, facebookresearch's ImageNet init) on voc2012 with PIR-AT's recipe, clean (config/voc2012/voc2012_upernet_convnext_t_patch.yaml):
# sh tool_train/voc2012/upernet_convnext_t_patch_train.sh [key value ...]
exec sh tool_train/train.sh voc2012 upernet_convnext_t_patch config/voc2012/voc2012_upernet_convnext_t_patch.yaml "$@"
