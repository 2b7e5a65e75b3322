#!/bin/sh
# Train aspp18 on synthetic: sh tool_train/synthetic/aspp_train.sh [key value ...]
exec sh tool_train/train.sh synthetic aspp18 config/synthetic/synthetic_aspp18.yaml "$@"
