#!/bin/sh
# Evaluate pspnet18 (SAT) on synthetic, clean and under BIM: sh tool_test/synthetic/psp_test_sat.sh [key value ...]
exec sh tool_test/test.sh synthetic pspnet18_sat config/synthetic/synthetic_pspnet18_sat.yaml "$@"
