#!/usr/bin/env bash
# On the GPU box: build and install liger_aot from this tree against the box's torch (sm_90 only by default).
# The full pip/compiler output goes to $OUT/pip_build.log (or /tmp); the first compiler errors are printed.
set -uo pipefail
export LIGER_CUDA_ARCHS="${LIGER_CUDA_ARCHS:-9.0}"
export MAX_JOBS="${MAX_JOBS:-16}"
log="${OUT:-/tmp}/pip_build.log"
if ! python3 -m pip install -v --no-build-isolation --no-deps --no-index . > "$log" 2>&1; then
  grep -n -m 20 -A 6 "error:" "$log"
  tail -20 "$log"
  exit 1
fi
python3 -c "import liger_aot, json; print(json.dumps(liger_aot.build_info()))"
# The built binaries (the extension and the build record) as $OUT/liger_so.tgz.*: carried back as .prebuilt/,
# a later call whose C++ and kernels are unchanged skips this build (gpu_all.sh's stage "prebuilt").
if [[ -n "${OUT:-}" ]]; then
  pkg=$(python3 -c "import liger_aot, os; print(os.path.dirname(liger_aot.__file__))")
  # in parts of 15 MiB: the device returns files of at most 16 MiB
  (cd "$pkg" && tar czf - ./*.so _build_info.json | split -b 15M - "$OUT/liger_so.tgz.")
fi
