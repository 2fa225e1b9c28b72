"""Loads the compiled operator library after checking it matches the installed torch."""
import functools
import glob
import json
import os

import torch

_DIR = os.path.dirname(os.path.abspath(__file__))


@functools.lru_cache(maxsize=None)
def _read_build_info() -> dict:
    path = os.path.join(_DIR, "_build_info.json")
    if not os.path.exists(path):
        raise ImportError(f"liger_aot: {path} is missing; the package was not built (pip install --no-build-isolation .)")
    with open(path) as f:
        return json.load(f)


def library_path() -> str:
    found = sorted(glob.glob(os.path.join(_DIR, "_C*.so")))
    if not found:
        raise ImportError(f"liger_aot: the compiled library _C*.so is missing from {_DIR}; "
                          "build it with `pip install --no-build-isolation .` or `make build`")
    return found[0]


def load_library() -> None:
    info = _read_build_info()
    running = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    if running != info["torch_minor"]:
        raise ImportError(
            f"liger_aot {info['version']} was built against torch {info['torch_version']} and needs torch "
            f"{info['torch_minor']}.*, but torch {torch.__version__} is installed. Install torch=={info['torch_minor']}.* "
            f"or rebuild liger_aot against this torch: pip install --no-build-isolation --no-binary liger-aot liger-aot "
            f"(or `pip install --no-build-isolation .` in a source checkout).")
    torch.ops.load_library(library_path())


def build_info() -> dict:
    """What this build of liger_aot holds.

    Keys: ``archs`` (e.g. ``["sm_80", "sm_90a", ...]``), ``kernels`` (Triton kernel name -> number of
    compiled variants over all archs), ``triton_version`` and ``ptxas_version`` (the compiler the cubins
    came from), ``torch_version`` (the torch the library was built against), ``version``.
    """
    info = dict(_read_build_info())
    info["kernels"] = dict(info["kernels"])
    return info
