#!/bin/sh
# Train the tiny UperNet-ConvNeXt on synthetic, no defense: sh tool_train/synthetic/upernet_demo_train.sh [key value ...]
exec sh tool_train/train.sh synthetic upernet_demo config/synthetic/synthetic_upernet_demo.yaml "$@"
