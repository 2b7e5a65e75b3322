#!/bin/sh
# Train pspnet18 with SAT on synthetic: sh tool_train/synthetic/psp_train_sat.sh [key value ...]
exec sh tool_train/train.sh synthetic pspnet18_sat config/synthetic/synthetic_pspnet18_sat.yaml "$@"
