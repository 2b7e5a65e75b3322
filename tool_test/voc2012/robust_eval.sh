#!/bin/sh
# Evaluate pspnet50 on voc2012 clean and under the strong attack suite (config/attacks_suite.yaml):
# sh tool_test/voc2012/robust_eval.sh [key value ...]; EXP_NAME and CONFIG pick another
# model, ATTACKS another attack list.
exec sh tool_test/robust_eval.sh voc2012 pspnet50 config/voc2012/voc2012_pspnet50.yaml "$@"
