#!/bin/sh
# Evaluate pspnet18 (SAM) on synthetic, clean and under BIM: sh tool_test/synthetic/psp_test_sam.sh [key value ...]
exec sh tool_test/test.sh synthetic pspnet18_sam config/synthetic/synthetic_pspnet18_sam.yaml "$@"
