#!/bin/sh
# Evaluate pspnet50 on cityscapes clean and under the strong attack suite (config/attacks_suite.yaml):
# sh tool_test/cityscapes/robust_eval.sh [key value ...]; EXP_NAME and CONFIG pick another
# model, ATTACKS another attack list.
exec sh tool_test/robust_eval.sh cityscapes pspnet50 config/cityscapes/cityscapes_pspnet50.yaml "$@"
