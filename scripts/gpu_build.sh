#!/usr/bin/env bash
# On the GPU box: build and install liger_aot from this tree against the box's torch (sm_90 only by default).
set -euo pipefail
export LIGER_CUDA_ARCHS="${LIGER_CUDA_ARCHS:-9.0}"
export MAX_JOBS="${MAX_JOBS:-16}"
python3 -m pip install -q --no-build-isolation --no-deps --no-index . 2>&1 | tail -20
python3 -c "import liger_aot, json; print(json.dumps(liger_aot.build_info()))"
