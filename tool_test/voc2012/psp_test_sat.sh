#!/bin/sh
# Evaluate pspnet50 (SAT) on voc2012, clean and under BIM: sh tool_test/voc2012/psp_test_sat.sh [key value ...]
exec sh tool_test/test.sh voc2012 pspnet50_sat config/voc2012/voc2012_pspnet50_sat.yaml "$@"
