# Sourced by tool_train/train.sh and tool_test/{test,robust_eval}.sh once PYTHON, config, GPU_KEY (train_gpu or
# test_gpu) and the key value arguments ("$@") are set. Sets ${launch}: empty for one process, else torchrun
# with NPROC processes on this machine (--standalone, or the rendezvous flags in TORCHRUN_ARGS for several
# machines). NPROC defaults to the entries of GPU_KEY when CUDA GPUs exist, else 1.
nproc=${NPROC:-$("${PYTHON}" -m tool_train.nproc --config "${config}" --gpu_key "${GPU_KEY}" "$@" 2>/dev/null || echo 1)}
case "${nproc}" in
  ''|*[!0-9]*|0)
    echo "error: NPROC must be a positive integer (processes on this machine), got '${nproc}'" >&2; exit 2 ;;
esac
launch=""
if [ "${nproc}" -gt 1 ]; then
  launch="-m torch.distributed.run ${TORCHRUN_ARGS:---standalone} --nproc_per_node=${nproc}"
  export PYTHONUNBUFFERED=1
fi

# mkdir -p each folder, remembering (deepest first, one per line) the ones this run creates, for forget_refused_run.
make_run_dirs() {
  created=""
  for dir in "$@"; do
    path=$dir
    while [ "${path}" != . ] && [ "${path}" != / ] && [ ! -e "${path}" ]; do
      created="${created}${path}
"
      path=$(dirname "${path}")
    done
  done
  mkdir -p "$@" 2>/dev/null
}

# A refused run (exit 2) leaves no trace: its log file ($1) and the folders it created (once empty) go.
forget_refused_run() {
  rm -f "$1"
  old_ifs=$IFS
  IFS='
'
  for dir in ${created}; do rmdir "${dir}" 2>/dev/null || :; done
  IFS=$old_ifs
}
