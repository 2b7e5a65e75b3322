#!/bin/sh
# Evaluate pspnet50 (DDC-AT) on voc2012, clean and under BIM: sh tool_test/voc2012/psp_test_ddcat.sh [key value ...]
exec sh tool_test/test.sh voc2012 pspnet50_ddcat config/voc2012/voc2012_pspnet50_ddcat.yaml "$@"
