#!/bin/sh
# Evaluate pspnet18 (pgd_at) on synthetic, clean and under BIM: sh tool_test/synthetic/psp_test_pgd_at.sh [key value ...]
exec sh tool_test/test.sh synthetic pspnet18_pgd_at config/synthetic/synthetic_pspnet18_pgd_at.yaml "$@"
