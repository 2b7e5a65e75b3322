#!/bin/sh
# Evaluate aspp (DDC-AT) on voc2012, clean and under BIM: sh tool_test/voc2012/aspp_test_ddcat.sh [key value ...]
exec sh tool_test/test.sh voc2012 aspp_ddcat config/voc2012/voc2012_aspp_ddcat.yaml "$@"
