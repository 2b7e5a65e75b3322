#!/bin/sh
# Train pspnet18 with trades on synthetic: sh tool_train/synthetic/psp_train_trades.sh [key value ...]
exec sh tool_train/train.sh synthetic pspnet18_trades config/synthetic/synthetic_pspnet18_trades.yaml "$@"
