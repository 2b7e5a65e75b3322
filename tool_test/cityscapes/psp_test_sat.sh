#!/bin/sh
# Evaluate pspnet50 (SAT) on cityscapes, clean and under BIM: sh tool_test/cityscapes/psp_test_sat.sh [key value ...]
exec sh tool_test/test.sh cityscapes pspnet50_sat config/cityscapes/cityscapes_pspnet50_sat.yaml "$@"
