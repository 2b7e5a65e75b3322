#!/bin/sh
# Train PIR-AT's UperNet-ConvNeXt-T on voc2012 with PGD-AT (5 steps at 4/255; PIR-AT's AdamW recipe and robust ImageNet init are not
# here yet, docs/pir_at.md): sh tool_train/voc2012/upernet_convnext_t_train_pirat.sh [key value ...]
exec sh tool_train/train.sh voc2012 upernet_convnext_t_pirat config/voc2012/voc2012_upernet_convnext_t_pirat.yaml "$@"
