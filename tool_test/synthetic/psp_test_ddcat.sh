#!/bin/sh
# Evaluate pspnet18 (DDC-AT) on synthetic, clean and under BIM: sh tool_test/synthetic/psp_test_ddcat.sh [key value ...]
exec sh tool_test/test.sh synthetic pspnet18_ddcat config/synthetic/synthetic_pspnet18_ddcat.yaml "$@"
