#!/bin/sh
# Evaluate deeplabv3plus_mobilenet_sam on voc2012, clean and under BIM: sh tool_test/voc2012/deeplabv3plus_mobilenet_test_sam.sh [key value ...]
# (the strong suite: CONFIG=config/voc2012/voc2012_deeplabv3plus_mobilenet_sam.yaml EXP_NAME=deeplabv3plus_mobilenet_sam sh tool_test/voc2012/robust_eval.sh)
exec sh tool_test/test.sh voc2012 deeplabv3plus_mobilenet_sam config/voc2012/voc2012_deeplabv3plus_mobilenet_sam.yaml "$@"
