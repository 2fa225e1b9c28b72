#!/usr/bin/env bash
# One call on the GPU box: build, GPU tests, the C++ example on CUDA, extra commands and the benchmarks.
# Logs go to $OUT. Stages: STAGES="build test cpp extra bench" (default: build test cpp bench); "prebuilt" instead of
# "build" takes the binaries of an earlier build (see scripts/gpu_build.sh) and saves ~150 s. The tree arrives
# without .git: pass LIGER_BENCH_COMMIT=<hash> so the recorded results name their commit.
# DEADLINE (seconds, default 560) bounds the whole call: the test, extra and bench stages shorten their time
# limits to what is left and skip what no longer fits, so the logs come back before the device's limit.
# The device returns only a few files per call: at exit every log is packed into $OUT/logs.tgz (h200.md, the
# benchmark results, stays beside it).
# EXTRA="cmd1; cmd2" (stage extra) runs each command with its output in $OUT/extra_<n>.log.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/liger_out}"
mkdir -p "$OUT"
STAGES="${STAGES:-build test cpp bench}"
has() { [[ " $STAGES " == *" $1 "* ]]; }
END=$(( SECONDS + ${DEADLINE:-560} ))
left() { echo $(( END - SECONDS )); }
pack() { (cd "$OUT" && ls ./*.log >/dev/null 2>&1 && tar czf logs.tgz ./*.log && rm -f ./*.log); }
trap pack EXIT
if has prebuilt; then
  # the binaries of an earlier call's build (its $OUT/liger_so.tgz.* parts, carried in .prebuilt/) with this
  # tree's Python: valid while csrc/ and triton_src/ are unchanged since that build
  cat .prebuilt/liger_so.tgz.* | tar xzf - -C python/liger_aot || exit 1
  export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
  python3 -c "import liger_aot; print('prebuilt liger_aot', liger_aot.build_info()['torch_version'])"
  if ls .whl/liger_kernel-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-deps --no-index .whl/liger_kernel-*.whl
  fi
fi
if has build; then
  bash scripts/gpu_build.sh > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
  tail -1 "$OUT/build.log"
  if ls .whl/liger_kernel-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-deps --no-index .whl/liger_kernel-*.whl
  fi
fi
if has test; then
  # AOTInductor and the deploy tests' CMake programs compile with $CXX: on this box, through the wrapper that
  # links the shared libstdc++ (the box's g++ links it statically; a loaded AOTInductor model then segfaults).
  export LIGER_REAL_CXX="${CXX:-g++}" CXX="$PWD/scripts/cxx_shared_libstdcxx.sh"
  # TESTS="tests/test_a.py tests/test_b.py" narrows the GPU run (default: every test file)
  # The packaging tests' CPU cases too: they catch toolchain problems of this box (error paths, libstdc++).
  python3 -m pytest tests/test_packaging.py -q -p no:cacheprovider 2>&1 | tail -1 | tee -a "$OUT/gpu_tests.log"
  # One pytest process per file (a crash loses one file, not the run); -v lines in $OUT/gpu_tests.log.
  end=$(( SECONDS + ${TEST_TIMEOUT:-420} )); (( end < END - 10 )) || end=$(( END - 10 ))
  for f in ${TESTS:-tests/test_*.py}; do
    left=$(( end - SECONDS )); (( left > 5 )) || { echo "SKIPPED (time): $f"; continue; }
    timeout "$left" python3 -m pytest "$f" -m gpu -v -p no:cacheprovider -rfE --tb=short ${PYTEST_ARGS:-} > "$OUT/gpu_$(basename "$f" .py).log" 2>&1
    rc=$?
    echo "$f rc=$rc: $(tail -1 "$OUT/gpu_$(basename "$f" .py).log")" | tee -a "$OUT/gpu_tests.log"
    grep -E "^(FAILED|ERROR) " "$OUT/gpu_$(basename "$f" .py).log" | head -8 | cut -c1-300
  done
fi
if has cpp; then
  (cmake -S . -B /tmp/cb -G Ninja -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')" \
      -DLIGER_BUILD_EXAMPLES=ON -DLIGER_CUDA_ARCHS=9.0 && cmake --build /tmp/cb -j16 \
   && python3 examples/cpp/make_model.py --model /tmp/m.pt --input /tmp/x.pt \
   && /tmp/cb/examples/cpp/liger_rms_norm_demo /tmp/m.pt /tmp/x.pt --device cuda) > "$OUT/cpp.log" 2>&1
  echo "cpp example rc=$?"; tail -5 "$OUT/cpp.log"
fi
if has extra; then
  n=0
  IFS=';' read -ra cmds <<< "${EXTRA:-}"
  for cmd in "${cmds[@]}"; do
    [[ -n "${cmd// /}" ]] || continue
    n=$(( n + 1 )); l=$(left)
    (( l > 15 )) || { echo "SKIPPED (time): $cmd"; continue; }
    timeout $(( l - 10 )) bash -c "$cmd" > "$OUT/extra_$n.log" 2>&1
    echo "== extra $n rc=$?: $cmd"; tail -${EXTRA_TAIL:-6} "$OUT/extra_$n.log" | cut -c1-300
  done
fi
if has bench; then
  # BENCH="rms_norm swiglu ..." picks benchmarks/bench_<op>.py files (default: all of them); BENCH_ARGS="--quick"
  if [[ -n "${BENCH:-}" ]]; then files=$(printf 'benchmarks/bench_%s.py ' $BENCH); else files=$(ls benchmarks/bench_*.py); fi
  for f in $files; do
    op=$(basename "$f" .py); op=${op#bench_}
    l=$(left); (( l > 20 )) || { echo "SKIPPED (time): $f"; continue; }
    t=${BENCH_TIMEOUT:-300}; (( t < l - 10 )) || t=$(( l - 10 ))
    timeout "$t" python3 "$f" ${BENCH_ARGS:-} --results "$OUT/h200.md" > "$OUT/bench_$op.log" 2>&1
    echo "== $f rc=$?"; grep -E "MISSED|met|failed|Error" "$OUT/bench_$op.log" | head -8
  done
fi
