#!/bin/sh
# Shared body of the tool_test/<dataset>/*.sh scripts: evaluate exp/<dataset>/<exp_name> clean, then under BIM.
# The model is MODEL_PATH, else the latest checkpoint in exp/<dataset>/<exp_name>/model, else the config's.
# Processes: NPROC (default: the entries of test_gpu when CUDA GPUs exist, else 1); more than 1 launches
# torchrun, each process predicting its share of the images (see tool_train/launch.sh).
# usage: sh tool_test/test.sh DATASET EXP_NAME CONFIG [key value ...]
set -e
PYTHON=${PYTHON:-python}
dataset=$1; exp_name=${EXP_NAME:-$2}; config=$3
shift 3
exp_dir=exp/${dataset}/${exp_name}
result_dir=${exp_dir}/result
now=$(date +"%Y%m%d_%H%M%S")
model=${MODEL_PATH:-$(ls "${exp_dir}"/model/train_epoch_*.pth 2>/dev/null | sort -V | tail -n 1)}
GPU_KEY=test_gpu
. tool_train/launch.sh
make_run_dirs "${result_dir}" || {
  echo "error: cannot create '${result_dir}' (a path below a file, or no permission); choose another EXP_NAME" >&2; exit 2; }
status_file=$(mktemp)
for mode in "" "--attack"; do
  echo 0 > "${status_file}"
  # sh has no pipefail: the exit code of test.py travels through a file past tee.
  # ${launch} and ${mode} are split into words on purpose.
  { "${PYTHON}" -u ${launch} test.py --config "${config}" ${mode} save_folder "${result_dir}" \
      ${model:+model_path "${model}"} "$@" 2>&1 || echo $? > "${status_file}"; } | tee -a "${result_dir}/test-${now}.log"
  status=$(cat "${status_file}")
  if [ "${status}" -ne 0 ]; then
    rm -f "${status_file}"
    # Refused before the clean pass wrote anything: no trace (the attacked pass's refusal keeps the clean results).
    [ "${status}" -ne 2 ] || [ -n "${mode}" ] || forget_refused_run "${result_dir}/test-${now}.log"
    exit "${status}"
  fi
done
rm -f "${status_file}"
cp "${config}" tool_test/test.sh test.py "${exp_dir}/"  # a record of what ran
