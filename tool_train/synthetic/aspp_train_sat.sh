#!/bin/sh
# Train aspp18 with SAT on synthetic: sh tool_train/synthetic/aspp_train_sat.sh [key value ...]
exec sh tool_train/train.sh synthetic aspp18_sat config/synthetic/synthetic_aspp18_sat.yaml "$@"
