#!/bin/sh
# Evaluate pspnet18 (trades) on synthetic, clean and under BIM: sh tool_test/synthetic/psp_test_trades.sh [key value ...]
exec sh tool_test/test.sh synthetic pspnet18_trades config/synthetic/synthetic_pspnet18_trades.yaml "$@"
