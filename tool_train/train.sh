#!/bin/sh
# Shared body of the tool_train/<dataset>/*.sh scripts: train one config into exp/<dataset>/<exp_name>.
# usage: sh tool_train/train.sh DATASET EXP_NAME CONFIG [key value ...]
# Processes on this machine: NPROC, by default the entries of train_gpu when CUDA GPUs exist, else 1; more
# than 1 launches torchrun (--standalone, or the rendezvous flags in TORCHRUN_ARGS for several machines).
set -e
PYTHON=${PYTHON:-python}
dataset=$1; exp_name=${EXP_NAME:-$2}; config=$3
shift 3
exp_dir=exp/${dataset}/${exp_name}
model_dir=${exp_dir}/model
now=$(date +"%Y%m%d_%H%M%S")
GPU_KEY=train_gpu
. tool_train/launch.sh
make_run_dirs "${model_dir}" "${exp_dir}/result" || {
  echo "error: cannot create '${model_dir}' (a path below a file, or no permission); choose another EXP_NAME" >&2; exit 2; }
status_file=$(mktemp)
echo 0 > "${status_file}"
# sh has no pipefail: the exit code of train.py travels through a file past tee.
# ${launch} is split into words on purpose (torchrun and its flags).
{ "${PYTHON}" -u ${launch} train.py --config "${config}" save_path "${model_dir}" "$@" 2>&1 \
    || echo $? > "${status_file}"; } | tee "${model_dir}/train-${now}.log"
status=$(cat "${status_file}"); rm -f "${status_file}"
# A record of what ran, once train.py accepted its inputs (a refused run, exit 2, leaves the folder as it was).
if [ "${status}" -eq 2 ]; then forget_refused_run "${model_dir}/train-${now}.log"
else cp "${config}" tool_train/train.sh train.py "${exp_dir}/" || :; fi
exit "${status}"
