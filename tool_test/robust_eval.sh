#!/bin/sh
# Shared body of tool_test/<dataset>/robust_eval.sh: evaluate exp/<dataset>/<exp_name> clean and under the
# strong attack suite in one test.py run, into exp/<dataset>/<exp_name>/robust (table in the log,
# results.csv, results.json, robustness_curve.png). Stored predictions are reused: a re-run after an
# interruption computes only what is missing. The model is MODEL_PATH, else the latest checkpoint in
# exp/<dataset>/<exp_name>/model, else the config's; CONFIG picks another config (e.g. a SAT model's).
# The attacks: the YAML list in the file ATTACKS (default config/attacks_suite.yaml), or `attacks "[...]"`
# among the arguments (later key value pairs win). PROTOCOL names a paper's evaluation (config/protocols/): its
# keys and, unless ATTACKS is set, its attacks (test.py --protocol).
# Processes: NPROC, as in tool_test/test.sh.
# usage: [ATTACKS=FILE] [PROTOCOL=NAME] sh tool_test/robust_eval.sh DATASET EXP_NAME CONFIG [key value ...]
set -e
PYTHON=${PYTHON:-python}
dataset=$1; exp_name=${EXP_NAME:-$2}; config=${CONFIG:-$3}
shift 3
exp_dir=exp/${dataset}/${exp_name}
result_dir=${exp_dir}/robust
now=$(date +"%Y%m%d_%H%M%S")
model=${MODEL_PATH:-$(ls "${exp_dir}"/model/train_epoch_*.pth 2>/dev/null | sort -V | tail -n 1)}
if [ -n "${ATTACKS}" ] || [ -z "${PROTOCOL}" ]; then
  attacks_file=${ATTACKS:-config/attacks_suite.yaml}
  [ -f "${attacks_file}" ] || {
    echo "error: attack list '${attacks_file}' not found; set ATTACKS to a YAML list of attacks (config/attacks_*.yaml)" >&2
    exit 2; }
  set -- attacks "$(cat "${attacks_file}")" "$@"  # before the arguments, so that theirs win
fi
GPU_KEY=test_gpu
. tool_train/launch.sh
make_run_dirs "${result_dir}" || {
  echo "error: cannot create '${result_dir}' (a path below a file, or no permission); choose another EXP_NAME" >&2; exit 2; }
status_file=$(mktemp)
echo 0 > "${status_file}"
# sh has no pipefail: the exit code of test.py travels through a file past tee.
# ${launch} is split into words on purpose (torchrun and its flags).
{ "${PYTHON}" -u ${launch} test.py --config "${config}" ${PROTOCOL:+--protocol "${PROTOCOL}"} \
    save_folder "${result_dir}" ${model:+model_path "${model}"} "$@" 2>&1 || echo $? > "${status_file}"; } | tee -a "${result_dir}/robust_eval-${now}.log"
status=$(cat "${status_file}")
rm -f "${status_file}"
# A record of what ran, once test.py accepted its inputs (a refused run, exit 2, leaves the folder as it was).
if [ "${status}" -eq 2 ]; then forget_refused_run "${result_dir}/robust_eval-${now}.log"
else cp "${config}" tool_test/robust_eval.sh test.py "${exp_dir}/" || :; fi
exit "${status}"
