#!/bin/sh
# Evaluate pspnet18 on synthetic clean and under the strong attack suite (config/attacks_suite.yaml):
# sh tool_test/synthetic/robust_eval.sh [key value ...]; EXP_NAME and CONFIG pick another
# model, ATTACKS another attack list.
exec sh tool_test/robust_eval.sh synthetic pspnet18 config/synthetic/synthetic_pspnet18.yaml "$@"
