#!/bin/sh
# Evaluate aspp (SAT) on cityscapes, clean and under BIM: sh tool_test/cityscapes/aspp_test_sat.sh [key value ...]
exec sh tool_test/test.sh cityscapes aspp_sat config/cityscapes/cityscapes_aspp_sat.yaml "$@"
