"""What a ``triton_src/<op>.py`` file declares: its kernels and the specializations to build.

Every ``triton_src`` module exposes ``KERNELS``, a list of :class:`KernelSpec`, and may expose
``CPP_CONSTANTS`` (name -> int), which the generator writes into the op's C++ header so that
enumerations shared by the kernel and the launcher have one source of truth.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

DTYPES = ("fp32", "bf16", "fp16")
ELEMENT_SIZE = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class Variant:
    """One compiled specialization of a kernel.

    key:        the fields the launcher looks the variant up by. Names ending in ``_dtype`` hold a dtype
                name ("fp32", "bf16", "fp16"); other values are ints or bools.
    signature:  runtime arguments in kernel order -> Triton type ("*bf16", "i32", "i64", "fp32", "i1").
    constexprs: constexpr arguments -> int or bool; exposed to C++ as fields of the variant.
    aligned:    every pointer argument is promised 16-byte aligned (the launcher re-checks it).
    divisible:  integer arguments promised to be multiples of 16 (the launcher picks the variant only then), as
                Triton's JIT specializes them: e.g. a row mask ``arange(0, 16) < n`` becomes uniform, and
                group_norm's register kernel lost 4 % without it (H200, scripts/tune_group_norm.py --floor).
    launch_pdl: launched as a programmatic dependent of the kernel before it in the stream (it may start before
                that one has finished): the kernel must call griddepcontrol.wait (``gdc_wait``) before it reads
                anything an earlier kernel writes, or writes anything an earlier kernel reads.
    archs:      compute capabilities (e.g. ``(90,)``) this variant is built for; empty means every arch of
                the build. A key with no variant for the running arch is looked up as missing (``*_find``
                returns nullptr), so the launcher must fall back to a variant every arch has.
    maxnreg:    registers a thread at most (ptxas .maxnreg), e.g. so that two programs fit an SM; None: the
                compiler's choice.
    """

    key: dict
    signature: dict
    constexprs: dict
    num_warps: int
    num_stages: int = 1
    aligned: bool = False
    archs: tuple = ()
    divisible: tuple = ()
    launch_pdl: bool = False
    maxnreg: int = None

    def built_for(self, arch: int) -> bool:
        return not self.archs or arch in self.archs

    def for_arch(self, arch: int) -> "Variant":
        """This variant as built for sm_<arch>: programmatic dependent launch (griddepcontrol, sm_90 and later) is
        dropped below sm_90: a ``PDL`` constexpr becomes 0 (the kernels' PDL branches compile to nothing) and
        ``launch_pdl`` off. The launchers read the same key either way."""
        if arch >= 90 or not (self.launch_pdl or self.constexprs.get("PDL")):
            return self
        return replace(self, constexprs={**self.constexprs, "PDL": 0}, launch_pdl=False)

    def compile_signature(self, names) -> dict:
        """triton.compile's signature for the kernel's arguments ``names`` (in order): types, constexprs marked."""
        return {n: ("constexpr" if n in self.constexprs else self.signature[n]) for n in names}

    def compile_attrs(self, names) -> dict:
        """triton.compile's attrs: what this variant promises (16-byte aligned pointers when ``aligned``, the
        ``divisible`` integers multiples of 16), as Triton's JIT would specialize them."""
        attrs = {}
        for i, n in enumerate(names):
            t = self.signature.get(n, "")
            if (self.aligned and t.startswith("*")) or n in self.divisible:
                attrs[(i,)] = [["tt.divisibility", 16]]
        for n in self.divisible:
            if not self.signature.get(n, "").startswith("i"):
                raise ValueError(f"divisible names {n!r}, not an integer argument")
        return attrs

    def key_items(self):
        return tuple(sorted(self.key.items()))


@dataclass
class KernelSpec:
    fn: object  # the @triton.jit function
    variants: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.fn.__name__
