#!/bin/sh
# Train pspnet18 with SAM on synthetic: sh tool_train/synthetic/psp_train_sam.sh [key value ...]
exec sh tool_train/train.sh synthetic pspnet18_sam config/synthetic/synthetic_pspnet18_sam.yaml "$@"
