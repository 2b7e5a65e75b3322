#!/bin/sh
# Train pspnet50 with DDC-AT on voc2012: sh tool_train/voc2012/psp_train_ddcat.sh [key value ...]
exec sh tool_train/train.sh voc2012 pspnet50_ddcat config/voc2012/voc2012_pspnet50_ddcat.yaml "$@"
