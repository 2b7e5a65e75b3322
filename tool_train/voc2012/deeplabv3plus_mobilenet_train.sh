#!/bin/sh
# Train VainF's deeplabv3plus_mobilenet on voc2012 aug with SGD (SAM-AT baseline): sh tool_train/voc2012/deeplabv3plus_mobilenet_train.sh [key value ...]
exec sh tool_train/train.sh voc2012 deeplabv3plus_mobilenet config/voc2012/voc2012_deeplabv3plus_mobilenet.yaml "$@"
