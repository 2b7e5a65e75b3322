#!/bin/sh
# Train pspnet50 with SAT on voc2012: sh tool_train/voc2012/psp_train_sat.sh [key value ...]
exec sh tool_train/train.sh voc2012 pspnet50_sat config/voc2012/voc2012_pspnet50_sat.yaml "$@"
