#!/usr/bin/env bash
# The GPU checks in one command, for a maintainer on a machine with an NVIDIA GPU:
#   1. build the extension against the installed torch, for this GPU's architecture;
#   2. the CUDA tests (the tests marked `cuda`, see tests/conftest.py): the kernels against the
#      CPU kernels bit for bit (tests/test_cuda.py: dtypes, layouts, offsets, grid limits,
#      2^31 elements, the shared-memory limit, ties, odd values, streams, fresh processes, a
#      first call inside a CUDA-graph capture), against the references and a brute force; the
#      mixers under torch.cuda.set_sync_debug_mode("error"); a mixer call captured and replayed;
#   3. compute-sanitizer memcheck, racecheck, synccheck and initcheck on one small case each
#      (skipped without the tool);
#   4. benchmarks/bench_ops.py on the GPU (fused op vs the bandwidth floor, torchvision's CutMix);
#   5. benchmarks/bench_step.py on the GPU (bf16 autocast, channels-last, pipelined steps).
# Logs and the Markdown tables go to OUT_DIR; a summary is printed at the end. Each step has
# its own time limit, cut to what is left of the whole run's deadline (SMP_SUITE_SECONDS,
# default 570: one 10-minute call to a lent machine); a step with no time left is skipped.
#
#   bash benchmarks/gpu_suite.sh [OUT_DIR]         # default OUT_DIR: $OUT, else ./gpu_suite_out
#
# The compiler: an extension must be built with the same C++ runtime that loads it. Some
# images set CXX to a g++ that links libstdc++ statically into extensions, and then every
# failing TORCH_CHECK crashes the process; the system g++ is used when there is one
# (override with SMP_CXX=...).
set -uo pipefail
deadline=${SMP_SUITE_SECONDS:-570}  # bash's SECONDS counts from the start of this script
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_suite_out}}
mkdir -p "$out"
python=${PYTHON:-python3}
summary="$out/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }

if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_suite: no CUDA device visible to torch ($python): nothing to run" >&2
  exit 2
fi
note "gpu: $("$python" -c "import torch; print(torch.cuda.get_device_name(0))") | torch $("$python" -c "import torch; print(torch.__version__)")"

cxx=${SMP_CXX:-$( [ -x /usr/bin/g++ ] && echo /usr/bin/g++ || echo "${CXX:-g++}")}
export CXX="$cxx" CUDAHOSTCXX="$cxx" CC="${cxx%++}cc"
[ -x "$CC" ] || CC=$(command -v gcc || echo cc)
export CC
arch=$("$python" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))")
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$arch}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

step() {  # step NAME SECONDS LOGFILE COMMAND...: runs it with a limit, notes its exit status and time
  local name=$1 limit=$2 log=$3
  shift 3
  local left=$((deadline - SECONDS - 5))
  if [ "$left" -lt 20 ]; then
    note "$name: skipped, the run's deadline is near (log: none)"
    return 124
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local start=$SECONDS
  timeout "$limit" "$@" > "$log" 2>&1
  local rc=$?
  note "$name: exit $rc in $((SECONDS - start)) s, limit $limit s (log: $log)"
  return $rc
}

step "build (CXX=$CXX, arch $TORCH_CUDA_ARCH_LIST)" 240 "$out/build.log" \
  "$python" -m pip install --no-build-isolation --no-deps --no-index -v -e . || { tail -n 40 "$out/build.log"; exit 1; }
"$python" -c "import saliencymixplus as s; i = s.extension_info(); print(i); assert i['cuda'], i" \
  | tee -a "$summary" || exit 1

export SMP_REQUIRE_EXTENSION=1 SMP_REQUIRE_CUDA_KERNELS=1 SMP_REQUIRE_GPU=1 PYTHONUNBUFFERED=1
step "CUDA tests" 300 "$out/cuda_tests.log" \
  "$python" -m pytest tests -q -m cuda -k "not compute_sanitizer" -p no:cacheprovider --durations=15
tail -n 3 "$out/cuda_tests.log" | tee -a "$summary"
step "compute-sanitizer (memcheck, racecheck, synccheck, initcheck)" 200 "$out/sanitizer.log" \
  "$python" -m pytest tests/test_cuda.py -q -rs -k compute_sanitizer -p no:cacheprovider
tail -n 3 "$out/sanitizer.log" | tee -a "$summary"

step "bench_ops.py (cuda)" 150 "$out/bench_ops_cuda.md" \
  "$python" benchmarks/bench_ops.py --device cuda --repeats 100 --only fused "torchvision v2.CutMix"
step "bench_step.py (cuda, bf16)" 200 "$out/bench_step_cuda.md" \
  "$python" benchmarks/bench_step.py --device cuda --amp --rounds 12 --steps 10

for table in "$out/bench_ops_cuda.md" "$out/bench_step_cuda.md"; do
  [ -f "$table" ] || continue
  echo; echo "== $table"; grep -E '^\||copy rate|^torch|^cuda' "$table"
done
echo; cat "$summary"
