#!/bin/sh
# Evaluate pspnet50 (DDC-AT) on cityscapes, clean and under BIM: sh tool_test/cityscapes/psp_test_ddcat.sh [key value ...]
exec sh tool_test/test.sh cityscapes pspnet50_ddcat config/cityscapes/cityscapes_pspnet50_ddcat.yaml "$@"
