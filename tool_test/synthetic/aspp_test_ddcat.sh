#!/bin/sh
# Evaluate aspp18 (DDC-AT) on synthetic, clean and under BIM: sh tool_test/synthetic/aspp_test_ddcat.sh [key value ...]
exec sh tool_test/test.sh synthetic aspp18_ddcat config/synthetic/synthetic_aspp18_ddcat.yaml "$@"
