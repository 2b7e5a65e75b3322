#!/bin/sh
# Evaluate pspnet50 on cityscapes, clean and under BIM: sh tool_test/cityscapes/psp_test.sh [key value ...]
exec sh tool_test/test.sh cityscapes pspnet50 config/cityscapes/cityscapes_pspnet50.yaml "$@"
