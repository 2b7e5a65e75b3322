#!/bin/sh
# Train aspp with DDC-AT on voc2012: sh tool_train/voc2012/aspp_train_ddcat.sh [key value ...]
exec sh tool_train/train.sh voc2012 aspp_ddcat config/voc2012/voc2012_aspp_ddcat.yaml "$@"
