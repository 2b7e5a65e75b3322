#!/bin/sh
# Evaluate aspp (DDC-AT) on cityscapes, clean and under BIM: sh tool_test/cityscapes/aspp_test_ddcat.sh [key value ...]
exec sh tool_test/test.sh cityscapes aspp_ddcat config/cityscapes/cityscapes_aspp_ddcat.yaml "$@"
