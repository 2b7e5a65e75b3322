#!/bin/sh
# Evaluate aspp18 (SAT) on synthetic, clean and under BIM: sh tool_test/synthetic/aspp_test_sat.sh [key value ...]
exec sh tool_test/test.sh synthetic aspp18_sat config/synthetic/synthetic_aspp18_sat.yaml "$@"
