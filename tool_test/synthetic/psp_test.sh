#!/bin/sh
# Evaluate pspnet18 on synthetic, clean and under BIM: sh tool_test/synthetic/psp_test.sh [key value ...]
exec sh tool_test/test.sh synthetic pspnet18 config/synthetic/synthetic_pspnet18.yaml "$@"
