#!/bin/sh
# Train VainF's deeplabv3plus_mobilenet on voc2012 aug with SAM (SAM-AT): sh tool_train/voc2012/deeplabv3plus_mobilenet_train_sam.sh [key value ...]
exec sh tool_train/train.sh voc2012 deeplabv3plus_mobilenet_sam config/voc2012/voc2012_deeplabv3plus_mobilenet_sam.yaml "$@"
