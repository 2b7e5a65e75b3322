#!/bin/sh
# Evaluate aspp (SAT) on voc2012, clean and under BIM: sh tool_test/voc2012/aspp_test_sat.sh [key value ...]
exec sh tool_test/test.sh voc2012 aspp_sat config/voc2012/voc2012_aspp_sat.yaml "$@"
