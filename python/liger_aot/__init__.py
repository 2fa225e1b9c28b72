"""liger_aot: fused LLM kernels compiled ahead of time and registered as ``torch.ops.liger.*``.

``import liger_aot`` loads the operator library (no Triton, no compilation at run time); then use
``liger_aot.ops`` (functions), ``liger_aot.nn`` (modules) or ``torch.ops.liger`` directly.
"""
from ._library import build_info, load_library

load_library()

from . import functional, nn, ops  # noqa: E402

__version__ = build_info()["version"]
__all__ = ["build_info", "functional", "nn", "ops", "__version__"]
