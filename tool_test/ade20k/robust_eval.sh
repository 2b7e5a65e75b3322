#!/bin/sh
# Evaluate PIR-AT's UperNet-ConvNeXt-T on ade20k clean and under the strong attack suite (config/attacks_suite.yaml):
# sh tool_test/ade20k/robust_eval.sh [key value ...]; EXP_NAME and CONFIG pick another
# model, ATTACKS another attack list.
exec sh tool_test/robust_eval.sh ade20k upernet_convnext_t_pirat config/ade20k/ade20k_upernet_convnext_t_pirat.yaml "$@"
