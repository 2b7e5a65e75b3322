#!/bin/sh
# PIR-AT's evaluation (tools/infer.py of nmndeep/Robust-Segmentation): each image decoded by PIL, its short side
# resized to the crop (512), one centre crop, no padding, no flip, labels as they are, 0 a class; SEA at L-inf
# 4/255 and 8/255 with 300 iterations per member (config/attacks_pirat.yaml), seed 225: config/protocols/pirat.yaml. Their mIoU is results.json's
# present_mIoU. Into exp/ade20k/<EXP_NAME>/robust_pirat; ours on the same checkpoint: tool_test/ade20k/robust_eval.sh
# with the same EXP_NAME and CONFIG; both in one table: python -m evaluation.compare --reference pirat (docs/pir_at.md).
# usage: [EXP_NAME=...] [CONFIG=...] [MODEL_PATH=...] sh tool_test/ade20k/pirat_eval.sh [key value ...]
exp_name=${EXP_NAME:-upernet_convnext_t_pirat}
config=${CONFIG:-config/ade20k/ade20k_upernet_convnext_t_pirat.yaml}
PROTOCOL=pirat EXP_NAME=${exp_name} CONFIG=${config} \
  exec sh tool_test/robust_eval.sh ade20k "${exp_name}" "${config}" save_folder "exp/ade20k/${exp_name}/robust_pirat" "$@"
