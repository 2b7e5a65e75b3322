#!/bin/sh
# Evaluate pspnet18 on synthetic clean and under the strong attack suite (BIM-2, PGD-20/100, SegPGD, CosPGD, PAdam, SEA at
# 4 and 8/255): sh tool_test/synthetic/robust_eval.sh [key value ...]; EXP_NAME and CONFIG pick another model.
exec sh tool_test/robust_eval.sh synthetic pspnet18 config/synthetic/synthetic_pspnet18.yaml "$@"
