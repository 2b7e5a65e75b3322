#!/bin/sh
# Train pspnet18 on synthetic: sh tool_train/synthetic/psp_train.sh [key value ...]
exec sh tool_train/train.sh synthetic pspnet18 config/synthetic/synthetic_pspnet18.yaml "$@"
