#!/bin/sh
# Evaluate pspnet50 on cityscapes clean and under the strong attack suite (BIM-2, PGD-20/100, SegPGD, CosPGD, PAdam, SEA at
# 4 and 8/255): sh tool_test/cityscapes/robust_eval.sh [key value ...]; EXP_NAME and CONFIG pick another model.
exec sh tool_test/robust_eval.sh cityscapes pspnet50 config/cityscapes/cityscapes_pspnet50.yaml "$@"
