#!/bin/sh
# Evaluate aspp18 on synthetic, clean and under BIM: sh tool_test/synthetic/aspp_test.sh [key value ...]
exec sh tool_test/test.sh synthetic aspp18 config/synthetic/synthetic_aspp18.yaml "$@"
