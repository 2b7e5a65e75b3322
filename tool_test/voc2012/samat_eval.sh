#!/bin/sh
# SAM-AT's robust_test.py protocol: PGD-10 (step eps/4, random start, the last iterate) at L-inf 1/255 and 2/255
# and L2 0.5 and 1.0 (config/attacks_samat.yaml), each image whole at its own resolution, one per forward, no flip (config/protocols/samat.yaml); results.json holds
# present_mIoU (VainF's Mean IoU) beside mIoU. Into exp/voc2012/<EXP_NAME>/robust_samat; the strong suite on the
# same checkpoint: tool_test/voc2012/robust_eval.sh with the same EXP_NAME and CONFIG.
# usage: [EXP_NAME=...] [CONFIG=...] [MODEL_PATH=...] sh tool_test/voc2012/samat_eval.sh [key value ...]
exp_name=${EXP_NAME:-deeplabv3plus_mobilenet_sam}
config=${CONFIG:-config/voc2012/voc2012_deeplabv3plus_mobilenet_sam.yaml}
PROTOCOL=samat EXP_NAME=${exp_name} CONFIG=${config} \
  exec sh tool_test/robust_eval.sh voc2012 "${exp_name}" "${config}" save_folder "exp/voc2012/${exp_name}/robust_samat" "$@"
