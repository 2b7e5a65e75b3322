#!/bin/sh
# Train the tiny UperNet-ConvNeXt with pgd_at on synthetic: sh tool_train/synthetic/upernet_demo_train_pgd_at.sh [key value ...]
exec sh tool_train/train.sh synthetic upernet_demo_pgd_at config/synthetic/synthetic_upernet_demo_pgd_at.yaml "$@"
