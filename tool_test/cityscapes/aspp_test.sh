#!/bin/sh
# Evaluate aspp on cityscapes, clean and under BIM: sh tool_test/cityscapes/aspp_test.sh [key value ...]
exec sh tool_test/test.sh cityscapes aspp config/cityscapes/cityscapes_aspp.yaml "$@"
