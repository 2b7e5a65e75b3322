#!/bin/sh
# Evaluate aspp on voc2012, clean and under BIM: sh tool_test/voc2012/aspp_test.sh [key value ...]
exec sh tool_test/test.sh voc2012 aspp config/voc2012/voc2012_aspp.yaml "$@"
