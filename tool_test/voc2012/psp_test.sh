#!/bin/sh
# Evaluate pspnet50 on voc2012, clean and under BIM: sh tool_test/voc2012/psp_test.sh [key value ...]
exec sh tool_test/test.sh voc2012 pspnet50 config/voc2012/voc2012_pspnet50.yaml "$@"
