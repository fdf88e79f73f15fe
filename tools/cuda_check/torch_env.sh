# Sourced by the cuda_check scripts, from the repository root: where the CUDA build of
# PyTorch keeps its LibTorch and how to compile against it. Sets DEPS (default .gpucheck,
# unpacked from DEPS.tar.xz, prepare.sh's archive, where only that was carried), OUT
# (default /tmp/cuda_check, created), TORCH, ABI, STD (-std=c++17, or c++20 when that
# LibTorch needs it), FLAGS (every compile's flags), dep_libs (link flags for DEPS/lib),
# CUDA (1 when that LibTorch has CUDA), ALL_SOURCES and CHECK_SOURCES; defines build_main.
# TORCH_INCLUDE and TORCH_LIB default to TORCH's include/ and lib/ (pip's layout); set them,
# with ABI, to build against another LibTorch (Debian's: /usr/include and the multiarch
# lib/ with ABI=1), which is how these scripts are tried on a machine without a GPU.
DEPS=${DEPS:-.gpucheck}
OUT=${OUT:-/tmp/cuda_check}
mkdir -p "$OUT"
if [[ ! -d $DEPS && -f $DEPS.tar.xz ]]; then
  # Python's tarfile: PyTorch's machine has Python, not necessarily xz.
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
      "$DEPS.tar.xz" "$DEPS"
fi
# What takes Python and a compile to learn (~10 s) is learnt once a run: the first script
# to source this writes it to OUT/torch_env.cache, the others read it (all.sh starts afresh).
if [[ -z ${TORCH:-}${ABI:-}${STD:-} && -f $OUT/torch_env.cache ]]; then
  source "$OUT/torch_env.cache"
fi
TORCH=${TORCH:-$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')}
TORCH_INCLUDE=${TORCH_INCLUDE:-$TORCH/include}
TORCH_LIB=${TORCH_LIB:-$TORCH/lib}
ABI=${ABI:-$(python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')}
# -isystem /usr/include would reorder the system headers (libstdc++'s include_next breaks).
TORCH_INCLUDES=(-isystem "$TORCH_INCLUDE/torch/csrc/api/include")
[[ $TORCH_INCLUDE != /usr/include ]] && TORCH_INCLUDES=(-isystem "$TORCH_INCLUDE" "${TORCH_INCLUDES[@]}")
if [[ -z ${STD:-} ]]; then
  STD=-std=c++17
  echo '#include <torch/torch.h>' | g++ $STD -x c++ -fsyntax-only "${TORCH_INCLUDES[@]}" - \
      2>/dev/null || STD=-std=c++20
fi
printf 'TORCH=%q\nABI=%q\nSTD=%q\n' "$TORCH" "$ABI" "$STD" > "$OUT/torch_env.cache"
TORCH_LIBS="-ltorch -ltorch_cpu -lc10"
CUDA=0
[[ -e $TORCH_LIB/libtorch_cuda.so ]] && CUDA=1 && TORCH_LIBS+=" -ltorch_cuda -lc10_cuda"
# The -D flags are those the Torch CMake package gives its consumers (USE_C10D_GLOO guards
# ProcessGroupGloo.hpp) and, with CUDA, ours for the NCCL and CUDA-graph code. The
# launcher finds the binaries beside itself (GRPO_*_BINARY empty).
FLAGS=($STD -O2 -DNDEBUG -D_GLIBCXX_USE_CXX11_ABI=$ABI -DUSE_C10D_GLOO -DUSE_DISTRIBUTED -I.
       -I"$DEPS/include" "${TORCH_INCLUDES[@]}" -idirafter "$DEPS/fallback" -w
       -DGRPO_COORDINATOR_BINARY='""' -DGRPO_REWARD_SERVER_BINARY='""'
       -DGRPO_LEARNER_BINARY='""' -DGRPO_ROLLOUT_WORKER_BINARY='""')
if (( CUDA )); then
  FLAGS+=(-DGRPO_WITH_NCCL -DUSE_C10D_NCCL -DGRPO_WITH_CUDA)
  # CUDA's runtime headers (ATen/cuda includes them): the toolkit's, or pip's nvidia ones.
  NVCC=$(command -v nvcc || true)
  CUDA_RUNTIME_H=$(find ${NVCC:+"$(dirname "$(dirname "$NVCC")")/include"} /usr/local/cuda/include \
                     "$TORCH/../nvidia" -name cuda_runtime.h 2>/dev/null | head -1)
  [[ -n $CUDA_RUNTIME_H ]] && FLAGS+=(-isystem "$(dirname "$CUDA_RUNTIME_H")")
  # cuda_runtime.h includes crt/host_config.h, which pip's runtime package may not ship.
  # The whole-disk search runs once a run: every script sources this file.
  if [[ -n $CUDA_RUNTIME_H && ! -e $(dirname "$CUDA_RUNTIME_H")/crt/host_config.h ]]; then
    [[ -f $OUT/host_config.txt ]] || find / -path /proc -prune -o -path '*/crt/host_config.h' \
        -print 2>/dev/null | head -1 > "$OUT/host_config.txt"
    HOST_CONFIG=$(cat "$OUT/host_config.txt")
    [[ -n $HOST_CONFIG ]] && FLAGS+=(-idirafter "$(dirname "$(dirname "$HOST_CONFIG")")")
  fi
fi
# Every carried library by the name the loader looks for; --as-needed keeps what is used.
dep_libs=$(for f in "$DEPS"/lib/*.so*; do printf -- '-l:%s ' "$(basename "$f")"; done)
# Every source of the services (their mains and grpoctl's included) and the generated
# ones: what run.sh compiles and e2e_job.sh links the services from.
ALL_SOURCES="$(ls base/*.cc tokenizer/*.cc data/*.cc model/*.cc rewards/*.cc rl/*.cc \
  jobspec/*.cc evaluation/*.cc learner/*.cc rollout_worker/*.cc reward_server/*.cc local/*.cc \
  coordinator/*.cc rpc/*.cc hf/*.cc metrics/*.cc sandbox/*.cc grpoctl/*.cc)
  $(ls "$DEPS"/src/*.cc 2>/dev/null)"
# The checks' and benches' own sources: compiled in the same parallel batch as the library
# (library_archive), not one at a time in the part that links them, but not archived.
CHECK_SOURCES="tools/cuda_check/nccl_join_check.cc tools/cuda_check/trainer_check.cc
  bench/rollout_bench.cc bench/learner_bench.cc bench/hf_bench.cc bench/bench_shapes.cc"

# compile_objects "SOURCES": each source compiled once into $OUT/obj (FLAGS; the scripts
# share the objects, so a source the run has compiled is not compiled again), all cores;
# its log in $OUT/obj/NAME.log. Sources that include LibTorch take <torch/torch.h>
# precompiled (as CMake's precompiled headers do), most of each one's compile time.
# Fails naming the sources that did not compile.
compile_objects() {
  mkdir -p "$OUT/obj" "$OUT/pch"
  local s failed=""
  if [[ ! -e $OUT/pch/torch.h.gch ]]; then
    echo '#include <torch/torch.h>' > "$OUT/pch/torch.h"
    g++ "${FLAGS[@]}" -x c++-header "$OUT/pch/torch.h" -o "$OUT/pch/torch.h.gch" \
        > "$OUT/pch/torch.log" 2>&1 || echo "precompiled header failed: $OUT/pch/torch.log"
  fi
  printf '%s\n' $1 | xargs -P "$(nproc)" -I{} sh -c \
    'o="$0/obj/$(echo {} | tr / _).o"; pch=""
     grep -qE "^#include [<\"](torch|ATen|c10)/" {} && [ -e "$0/pch/torch.h.gch" ] &&
       pch="-include $0/pch/torch.h"
     [ -e "$o" ] || g++ "$@" $pch -c {} -o "$o" > "${o%.o}.log" 2>&1' "$OUT" "${FLAGS[@]}"
  for s in $1; do
    [[ -e $(object_of "$s") ]] || failed+=" $s"
  done
  [[ -z $failed ]] && return 0
  echo "did not compile:$failed"
  for s in $failed; do grep -m5 error "$(object_of "$s" | sed 's/\.o$/.log/')"; done
  return 1
}

# object_of SOURCE: where compile_objects put it.
object_of() { echo "$OUT/obj/$(echo "$1" | tr / _).o"; }

# link NAME "OBJECTS AND ARCHIVES": linked into $OUT/NAME against LibTorch and DEPS/lib.
link() {
  # LibTorch's CUDA library registers its kernels when loaded, not through symbols we use:
  # linked as needed it would be dropped, as Torch's own CMake config knows.
  if ! g++ $2 -o "$OUT/$1" -L"$TORCH_LIB" -Wl,-rpath,"$TORCH_LIB" -Wl,--no-as-needed \
       $TORCH_LIBS -Wl,--as-needed -L"$DEPS/lib" -Wl,-rpath,"$(pwd)/$DEPS/lib" $dep_libs -lpthread \
       > "$OUT/${1}_link.log" 2>&1; then
    echo "$1: link failed"; grep -m20 -E "error|undefined" "$OUT/${1}_link.log"
    return 1
  fi
}

# library_archive: every source compiled, CHECK_SOURCES too (compile_objects, its failures
# printed, not fatal: a link that needs one fails naming it) and all of ALL_SOURCES but the
# mains archived in $OUT/libgrpo.a, once a run. Each script links its program against it, so no script keeps a source list.
library_archive() {
  [[ -e $OUT/libgrpo.a ]] && return 0
  compile_objects "$ALL_SOURCES $CHECK_SOURCES"
  local s objects=()
  for s in $ALL_SOURCES; do
    grep -q '^int main(' "$s" || [[ ! -e $(object_of "$s") ]] || objects+=("$(object_of "$s")")
  done
  ar rcs "$OUT/libgrpo.a" "${objects[@]}"
}

# build_main NAME "SOURCES": SOURCES (a main and what only it uses) compiled and linked with
# the library archive into $OUT/NAME.
build_main() {
  library_archive
  compile_objects "$2" || return 1
  local s objects=""
  for s in $2; do objects+=" $(object_of "$s")"; done
  link "$1" "$objects $OUT/libgrpo.a"
}
