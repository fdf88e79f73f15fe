#!/usr/bin/env bash
# Run here (Debian 12, after `bash scripts/setup.sh` has built build/): gathers what a GPU
# machine lacks to build our sources against its CUDA LibTorch, into DEPS (default
# .gpucheck), and packs it as DEPS.tar.xz (~16 MB; the folder itself is ~70 MB, past the
# 64 MiB a device call may carry). Carry the archive; torch_env.sh unpacks it there.
#   include/   Abseil, Protobuf, gRPC, prometheus-cpp and ICU headers, build/proto's
#              generated grpo/v1 headers
#   lib/       those libraries (and what gRPC loads: re2, c-ares, upb, OpenSSL), each under
#              its SONAME, the name the loader looks for
#   src/       the generated .pb.cc and .grpc.pb.cc sources
#   fallback/  Gloo's headers, for a LibTorch that ships none
#   bench/     the PyTorch eager baseline (../shared/bench), which the device tool does not
#              carry: the benches run it beside ours
set -euo pipefail
cd "$(dirname "$0")/../.."
DEPS=${DEPS:-.gpucheck}
[[ -f build/proto/grpo/v1/job.pb.cc ]] || { echo "build/ first: bash scripts/setup.sh" >&2; exit 1; }
rm -rf "$DEPS" "$DEPS.tar.xz"
mkdir -p "$DEPS"/{include/grpo/v1,lib,src,fallback,bench}
cp -r /usr/include/{absl,google,grpcpp,grpc,grpc++,prometheus,unicode} "$DEPS/include/"
cp build/proto/grpo/v1/*.h "$DEPS/include/grpo/v1/"
cp build/proto/grpo/v1/*.cc "$DEPS/src/"
cp -r /usr/include/gloo "$DEPS/fallback/"
if [[ -f ../shared/bench/pytorch_eager_baseline.py ]]; then
  cp ../shared/bench/pytorch_eager_baseline.py "$DEPS/bench/"
else
  echo "warning: ../shared/bench/pytorch_eager_baseline.py not found: the GPU benches will run" \
       "without the eager baseline" >&2
fi
libdir=/usr/lib/x86_64-linux-gnu
for dev in "$libdir"/libabsl_*.so "$libdir"/lib{protobuf,grpc++,grpc++_reflection,grpc,gpr,upb}.so \
           "$libdir"/lib{address_sorting,re2,cares,prometheus-cpp-core,icuuc,icui18n,icudata}.so \
           "$libdir"/lib{ssl,crypto}.so; do
  soname=$(objdump -p "$dev" | awk '$1 == "SONAME" {print $2}')
  cp -L "$dev" "$DEPS/lib/${soname:?no SONAME in $dev}"
done
tar cf - -C "$DEPS" . | xz -T0 -6 > "$DEPS.tar.xz"
echo "$DEPS: $(du -sh "$DEPS" | cut -f1), $DEPS.tar.xz: $(du -h "$DEPS.tar.xz" | cut -f1)" \
     "($(ls "$DEPS/lib" | wc -l) libraries, $(ls "$DEPS/src" | wc -l) generated sources," \
     "$(ls "$DEPS/bench" | wc -l) baseline script)"
