#!/bin/sh
# Train aspp18 with DDC-AT on synthetic: sh tool_train/synthetic/aspp_train_ddcat.sh [key value ...]
exec sh tool_train/train.sh synthetic aspp18_ddcat config/synthetic/synthetic_aspp18_ddcat.yaml "$@"
