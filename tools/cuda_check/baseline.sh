# Sourced by the bench scripts after torch_env.sh and their run(): where the PyTorch eager
# baseline (../shared/bench/pytorch_eager_baseline.py beside a developer's checkout) is on
# the GPU machine. The device tool carries the repository, not ../shared, so prepare.sh
# packs a copy into DEPS; the checkout's own paths are tried after it.
BASE=
for candidate in "$DEPS/bench/pytorch_eager_baseline.py" ../shared/bench/pytorch_eager_baseline.py \
                 shared/bench/pytorch_eager_baseline.py; do
  [[ -f $candidate ]] && BASE=$candidate && break
done
# baseline ARGS: the eager baseline with ARGS, through run() (its time-out, its log), or a
# line saying it is missing, so that a ratio left out is never a silent one.
baseline() {
  if [[ -z $BASE ]]; then
    echo "eager baseline: pytorch_eager_baseline.py not found (prepare.sh packs it into $DEPS/bench)"
    return 1
  fi
  run python3 "$BASE" "$@"
}
