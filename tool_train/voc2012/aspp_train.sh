#!/bin/sh
# Train aspp on voc2012: sh tool_train/voc2012/aspp_train.sh [key value ...]
exec sh tool_train/train.sh voc2012 aspp config/voc2012/voc2012_aspp.yaml "$@"
