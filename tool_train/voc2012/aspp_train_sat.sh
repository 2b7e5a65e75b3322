#!/bin/sh
# Train aspp with SAT on voc2012: sh tool_train/voc2012/aspp_train_sat.sh [key value ...]
exec sh tool_train/train.sh voc2012 aspp_sat config/voc2012/voc2012_aspp_sat.yaml "$@"
