#!/bin/sh
# Train pspnet18 with DDC-AT on synthetic: sh tool_train/synthetic/psp_train_ddcat.sh [key value ...]
exec sh tool_train/train.sh synthetic pspnet18_ddcat config/synthetic/synthetic_pspnet18_ddcat.yaml "$@"
