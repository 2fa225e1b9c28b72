# liger-aot: `make demo` runs the demo, `make test` runs the tests; each sets up what it needs first.
PYTHON ?= python3
# Targets for the cubins (default: Ampere, Hopper, Blackwell datacenter and consumer parts).
LIGER_CUDA_ARCHS ?= 8.0;9.0;10.0;12.0
export LIGER_CUDA_ARCHS
TORCH_PIN ?= torch==2.13.0
WHEEL_GLOB = dist/liger_aot-*-cp39-abi3-*.whl

.PHONY: deps wheel install build test test-gpu demo bench clean

deps:  ## build and test dependencies; the wheel itself needs only torch at run time
	$(PYTHON) -m pip install -q "$(TORCH_PIN)" "triton==3.6.0" ninja wheel "setuptools>=64" pytest pytest-xdist numpy "transformers==5.17.0"

wheel: deps  ## dist/liger_aot-*-cp39-abi3-*.whl with the cubins inside, pinned to this torch minor
	rm -f $(WHEEL_GLOB)
	$(PYTHON) -m pip wheel -q --no-build-isolation --no-deps -w dist .

install: wheel
	$(PYTHON) -m pip install -q --force-reinstall --no-deps $(WHEEL_GLOB)

build: deps  ## in-place build for development (PYTHONPATH=python)
	$(PYTHON) setup.py -q build_ext --inplace

# two pytest workers: CI's two cores run the CPU suite in 4.3 instead of 5.2 min
test: install  ## CPU suite (GPU tests skip without a GPU); on a GPU box: make test-gpu
	$(PYTHON) -m pytest tests -q -n 2

test-gpu:  ## on a GPU box, against the installed package: GPU tests only
	$(PYTHON) -m pytest tests -q -m gpu -rs

demo: install
	$(PYTHON) examples/demo.py

bench:  ## on a GPU box: every benchmarks/bench_<op>.py (BENCH="rms_norm swiglu" for some), results appended to benchmarks/results/
	for op in $(or $(BENCH),$(patsubst benchmarks/bench_%.py,%,$(wildcard benchmarks/bench_*.py))); do \
	  $(PYTHON) benchmarks/bench_$$op.py --results || exit 1; done

clean:
	rm -rf build dist python/liger_aot/_C*.so python/liger_aot/_build_info.json *.egg-info python/*.egg-info
