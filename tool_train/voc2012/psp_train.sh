#!/bin/sh
# Train pspnet50 on voc2012: sh tool_train/voc2012/psp_train.sh [key value ...]
exec sh tool_train/train.sh voc2012 pspnet50 config/voc2012/voc2012_pspnet50.yaml "$@"
