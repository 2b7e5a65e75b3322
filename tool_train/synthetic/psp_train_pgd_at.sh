#!/bin/sh
# Train pspnet18 with pgd_at on synthetic: sh tool_train/synthetic/psp_train_pgd_at.sh [key value ...]
exec sh tool_train/train.sh synthetic pspnet18_pgd_at config/synthetic/synthetic_pspnet18_pgd_at.yaml "$@"
