"""One patched model through every deployment path: eager, torch.compile, CUDA graphs, torch.export, AOTInductor,
TorchScript and C++ (issue 8).

The model is examples/deploy/tiny_llama.py's TinyLlama (2 layers, hidden 128, 4 query / 2 key-value heads of dim
64, vocabulary 256, random weights): the same module on the "torch" backend (Hugging Face Llama's formulas, the
unpatched reference) and on the "liger_aot" backend (liger::rms_norm, fused_add_rms_norm, rope, swiglu; with
attention "liger_flash", liger::flash_attn and flash_attn_varlen), with the same weights. The real Hugging Face
LlamaForCausalLM, patched with apply_liger_kernel_to_llama, goes through torch.export and
torch.compile(fullgraph=True) in test_hf_llama_patched_export_and_compile. Attention is "sdpa" on the CPU and
"liger_flash" on CUDA (its CPU kernel is a slow math reference; the export test runs it on the CPU too).

Without Triton. Every path runs in a child process in which `import triton` fails (sys.modules["triton"] = None,
which is what importlib reports for a package that is not installed: ImportError on import, find_spec None), started
by test_paths_without_triton; in the pytest process itself those tests skip. The exceptions need Triton by nature
and run in the parent (GPU only): torch.compile with Inductor on CUDA and compiling an AOTInductor package for CUDA
(Inductor writes Triton kernels for what it generates). Loading that package, from Python or C++, needs no Triton.
test_wheel_in_fresh_venv_without_triton runs the same child from an installed wheel in a venv that has no Triton.

Tolerances, one rule for every path: the same model in float64 (torch backend) is the reference; a path's largest
error against it may be at most twice the largest error of the unpatched model in eager mode at the path's
precision, plus 16 ulps (of that precision) of the reference's largest magnitude: the liger ops, Inductor's fused
code and the exported or scripted graphs all round differently from eager in the same precision, and the ulps
cover outputs where eager's own error happens to be tiny.

C++: examples/cpp is built on its own (CMake, Ninja) against libtorch and the loaded liger_aot's own library
(liger_aot/_C*.so), so no kernel is compiled; the build directory persists under build/examples_deploy/ (or is
$LIGER_DEPLOY_CPP_BUILD).
"""
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

CHILD_ENV = "LIGER_DEPLOY_NO_TRITON"
CHILD = os.environ.get(CHILD_ENV) == "1"
if CHILD:  # the child of test_paths_without_triton: Triton must be unimportable before anything else runs
    assert importlib.util.find_spec("triton") is None, "the child process must start with triton blocked"

import liger_aot  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "examples" / "deploy"
CPP = ROOT / "examples" / "cpp"
sys.path.insert(0, str(DEPLOY))

import tiny_llama as tl  # noqa: E402
from _shared import run_checked  # noqa: E402


def _load_example(name):
    spec = importlib.util.spec_from_file_location(f"liger_deploy_example_{name}", DEPLOY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu = pytest.mark.gpu
in_child = pytest.mark.skipif(not CHILD, reason="runs in the Triton-free child process (test_paths_without_triton)")
in_parent = pytest.mark.skipif(CHILD, reason="needs Triton (Inductor on CUDA): runs in the pytest process itself")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

# The ops the patched model must show in every graph (fused_add_rms_norm: every norm after the first layer's).
LIGER_OPS = {"rms_norm", "fused_add_rms_norm", "rope", "swiglu"}
BLOCK_TRITON = "import sys; sys.modules['triton'] = None  # any `import triton` raises ImportError\n"


# ---- models, inputs and the tolerance rule


def _config():
    return tl.LlamaConfig(max_seq_len=64)


def _ids(batch, seq, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed * 1000 + batch * 100 + seq)
    return torch.randint(0, _config().vocab_size, (batch, seq), generator=g).to(device)


class Models:
    """The unpatched model in float64 (reference) and at the test precision (baseline), and the patched model,
    all with the same weights."""

    def __init__(self, device="cpu", dtype=torch.float32, attention="sdpa"):
        base = tl.TinyLlama(_config(), "torch", "sdpa").to(device)
        self.ref = tl.same_weights(base, "torch", dtype=torch.float64).eval()
        self.baseline = tl.same_weights(base, "torch", dtype=dtype).eval()
        self.liger = tl.same_weights(base, "liger_aot", attention, dtype=dtype).eval()
        self.device, self.dtype = device, dtype

    def logits(self, ids):
        """(float64 reference, unpatched baseline) logits for ids."""
        with torch.no_grad():
            return self.ref(ids), self.baseline(ids)


def check(out, models, ref, baseline, what):
    """out (a path's result at models.dtype) against ref (float64), allowed twice the error of baseline (the
    unpatched eager model at models.dtype) plus 16 ulps of models.dtype of ref's largest magnitude."""
    out, ref, baseline = (t.detach().double().cpu() for t in (out, ref, baseline))
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)}, expected {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{what}: non-finite values"
    err = (out - ref).abs().max().item()
    base = (baseline - ref).abs().max().item()
    tol = 2 * base + 16 * torch.finfo(models.dtype).eps * ref.abs().max().item()
    assert err <= tol, (f"{what}: max error {err:.3g} against float64, allowed {tol:.3g} "
                        f"(2 x the unpatched eager model's {base:.3g} + 16 ulps)")


def loss_fn(model, ids, labels):
    logits = model(ids)
    if logits.dtype != torch.float64:  # the float64 reference stays float64
        logits = logits.float()
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten())


def loss_and_grads(model, ids, labels, fn=loss_fn):
    model.zero_grad(set_to_none=True)
    loss = fn(model, ids, labels)
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def check_training(models, ids, labels, loss, grads, what):
    ref_loss, ref_grads = loss_and_grads(models.ref, ids, labels)
    base_loss, base_grads = loss_and_grads(models.baseline, ids, labels)
    check(loss, models, ref_loss, base_loss, f"{what}: loss")
    assert set(grads) == set(ref_grads)
    for name in ref_grads:
        check(grads[name], models, ref_grads[name], base_grads[name], f"{what}: grad of {name}")


@pytest.fixture(scope="module")
def cpu_models():
    return Models()


# ---- eager, and decoding with a static cache


@in_child
@pytest.mark.parametrize("attention", ["sdpa", "liger_flash"])
def test_eager_forward_and_training_match_unpatched(cpu_models, attention):
    models = cpu_models if attention == "sdpa" else Models(attention=attention)
    for batch, seq in ((2, 12), (1, 1), (3, 33)):
        ids = _ids(batch, seq)
        with torch.no_grad():
            out = models.liger(ids)
        check(out, models, *models.logits(ids), f"eager {attention} logits {batch}x{seq}")
    ids, labels = _ids(2, 17)[:, :-1], _ids(2, 17)[:, 1:]
    loss, grads = loss_and_grads(models.liger, ids, labels)
    check_training(models, ids, labels, loss, grads, f"eager {attention} training")


@in_child
@pytest.mark.parametrize("attention,batch", [("sdpa", 2), ("liger_flash", 1)])
def test_decode_with_static_cache_matches_full_forward(attention, batch):
    models = Models(attention=attention)
    prompt, steps = 6, 5
    ids = _ids(batch, prompt + steps)
    ref, baseline = models.logits(ids)
    cache = models.liger.new_cache(batch)
    with torch.no_grad():
        check(models.liger.prefill(ids[:, :prompt], cache), models, ref[:, :prompt], baseline[:, :prompt],
              f"prefill {attention}")
        for i in range(prompt, prompt + steps):
            out = models.liger.decode(ids[:, i:i + 1], torch.tensor([i]), cache)
            check(out, models, ref[:, i:i + 1], baseline[:, i:i + 1], f"decode {attention} position {i}")


# ---- torch.compile


def _dynamo_graph(model, *args):
    """The one FX graph Dynamo captures (asserting there is one, without a break)."""
    explanation = torch._dynamo.explain(model)(*args)
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons
    return str(explanation.graphs[0].graph)


def _check_compiled_training_step(models, model, ids, labels, label):
    """One torch.compile(fullgraph=True) step (logits and loss, then backward) of `model` checked against the
    float64 reference and the unpatched model; returns the compiled function and the loss."""

    def step(model, ids, labels):
        logits = model(ids)
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten()), logits

    compiled = torch.compile(step, fullgraph=True)
    model.zero_grad(set_to_none=True)
    loss, logits = compiled(model, ids, labels)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    check(logits, models, *models.logits(ids), f"{label} logits")
    check_training(models, ids, labels, loss, grads, f"{label} training step")
    return compiled, loss


@in_child
def test_compile_fullgraph_forward_and_training_step(cpu_models):
    # Inductor on the CPU (C++ code, no Triton). One compiled function returns the logits and the loss; its
    # backward is the compiled backward graph, calling the ops' C++ backward.
    torch._dynamo.reset()
    model = tl.same_weights(cpu_models.liger, "liger_aot").train()
    ids, labels = _ids(2, 17)[:, :-1], _ids(2, 17)[:, 1:]
    assert LIGER_OPS <= set(tl.liger_ops_in(_dynamo_graph(model, ids)))
    compiled, loss = _check_compiled_training_step(cpu_models, model, ids, labels, "torch.compile")
    # the optimizer's step and a second training step reuse the compiled code
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.step()
    model.zero_grad(set_to_none=True)
    loss2, _ = compiled(model, ids, labels)
    loss2.backward()
    assert loss2.item() < loss.item()


# ---- torch.export, AOTInductor


@in_child
@pytest.mark.parametrize("attention", ["sdpa", "liger_flash"])
def test_export_dynamic_batch_and_seq_saved_and_loaded(tmp_path, attention):
    models = Models(attention=attention)
    ep = _load_example("export").export_model(models.liger)
    expected = LIGER_OPS | ({"flash_attn"} if attention == "liger_flash" else set())
    assert expected <= set(tl.liger_ops_in(str(ep.graph))), str(ep.graph)
    path = tmp_path / "llama_ep.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path)
    assert expected <= set(tl.liger_ops_in(str(loaded.graph)))
    for batch, seq in ((1, 1), (3, 17), (2, 64), (5, 2)):
        ids = _ids(batch, seq)
        ref, baseline = models.logits(ids)
        with torch.no_grad():
            check(ep.module()(ids), models, ref, baseline, f"exported {attention} {batch}x{seq}")
            check(loaded.module()(ids), models, ref, baseline, f"loaded export {attention} {batch}x{seq}")


@pytest.fixture(scope="module")
def cpu_package(tmp_path_factory, cpu_models):
    path = tmp_path_factory.mktemp("aoti") / "llama.pt2"
    return _load_example("aoti_package").build_package(cpu_models.liger, str(path))


@in_child
def test_aoti_package_loaded_from_python(cpu_package, cpu_models):
    runner = torch._inductor.aoti_load_package(cpu_package)
    for batch, seq in ((1, 1), (2, 16), (4, 37)):
        ids = _ids(batch, seq)
        with torch.no_grad():
            check(runner(ids), cpu_models, *cpu_models.logits(ids), f"AOTInductor package {batch}x{seq}")


# ---- TorchScript


@in_child
def test_torchscript_saved_loaded_and_trained(tmp_path, cpu_models):
    scripted = torch.jit.script(cpu_models.liger)
    assert LIGER_OPS <= set(tl.liger_ops_in(str(scripted.inlined_graph)))
    path = tmp_path / "llama.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    for batch, seq in ((1, 1), (2, 16), (3, 40)):
        ids = _ids(batch, seq)
        with torch.no_grad():
            check(loaded(ids), cpu_models, *cpu_models.logits(ids), f"TorchScript {batch}x{seq}")
    # the scripted graph trains through the ops' C++ autograd
    ids, labels = _ids(2, 13)[:, :-1], _ids(2, 13)[:, 1:]
    loaded.train()
    loss, grads = loss_and_grads(loaded, ids, labels)
    check_training(cpu_models, ids, labels, loss, grads, "TorchScript training")


# ---- C++ programs (examples/cpp, built on their own against this liger_aot's library)


@pytest.fixture(scope="module")
def cpp_programs():
    """Builds examples/cpp standalone (the two Llama programs only); returns {name: path}."""
    cmake, ninja = shutil.which("cmake"), shutil.which("ninja")
    if cmake is None or ninja is None:
        pytest.skip("cmake and ninja are needed to build the C++ examples")
    from liger_aot._library import library_path
    library = library_path()
    key = hashlib.sha1(f"{library}|{torch.utils.cmake_prefix_path}|{sys.executable}".encode()).hexdigest()[:12]
    build = Path(os.environ.get("LIGER_DEPLOY_CPP_BUILD") or ROOT / "build" / "examples_deploy" / key)
    run_checked([cmake, "-S", CPP, "-B", build, "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
          f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}", f"-DLIGER_AOT_LIBRARY={library}"], timeout=600)
    names = ["liger_llama_torchscript", "liger_llama_aoti"]
    run_checked([cmake, "--build", build, "-j", str(max(1, min(os.cpu_count() or 1, 8))), "--target", *names], timeout=1800)
    return {name: build / name for name in names}


def parse_logits(text):
    shape, values = None, {}
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["logits.shape"]:
            shape = tuple(int(p) for p in parts[1:])
        elif len(parts) == 3 and parts[0] == "logits":
            values[int(parts[1])] = float(parts[2])
    assert shape is not None, f"no 'logits.shape' line in:\n{text[-3000:]}"
    assert sorted(values) == list(range(len(values))) and len(values) == torch.Size(shape).numel()
    return torch.tensor([values[i] for i in range(len(values))], dtype=torch.float32).view(shape)


@in_child
def test_cpp_runs_scripted_model(cpp_programs, tmp_path, cpu_models):
    torch.jit.script(cpu_models.liger).save(str(tmp_path / "llama.pt"))
    ids = _ids(2, 16)
    torch.save(ids, tmp_path / "ids.pt")
    out = run_checked([cpp_programs["liger_llama_torchscript"], tmp_path / "llama.pt", tmp_path / "ids.pt"], timeout=300)
    assert "device cpu" in out.splitlines()[0]
    check(parse_logits(out), cpu_models, *cpu_models.logits(ids), "C++ TorchScript")


@in_child
def test_cpp_runs_aoti_package(cpp_programs, cpu_package, tmp_path, cpu_models):
    ids = _ids(3, 9)
    torch.save(ids, tmp_path / "ids.pt")
    out = run_checked([cpp_programs["liger_llama_aoti"], cpu_package, tmp_path / "ids.pt"], timeout=300)
    check(parse_logits(out), cpu_models, *cpu_models.logits(ids), "C++ AOTInductor")


# ---- the Hugging Face model, patched


@in_child
@pytest.mark.parametrize("device,flash", [("cpu", False), ("cpu", True), pytest.param("cuda", True, marks=gpu)])
def test_hf_llama_patched_export_and_compile(device, flash):
    # LlamaForCausalLM patched in place by apply_liger_kernel_to_llama (RMSNorm, RoPE, SwiGLU; flash_attention=True:
    # attention "liger_flash"), then torch.export with dynamic batch and sequence length, and
    # torch.compile(fullgraph=True) with the aot_eager backend (Dynamo and AOTAutograd, no Inductor: no Triton).
    transformers = pytest.importorskip("transformers")
    import liger_aot.transformers as lt
    from liger_aot.transformers import monkey_patch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=256, intermediate_size=256, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=False)  # head_dim 64: one the CUDA flash kernels take
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.normal_(1.0, 0.3)
    ref = transformers.LlamaForCausalLM(config)
    ref.load_state_dict(model.state_dict())
    ref = ref.to(device, torch.float64).eval()
    model = model.to(device, dtype).eval()
    models = types.SimpleNamespace(dtype=dtype)  # what check() reads
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 128, s, generator=g).to(device) for s in ((1, 1), (2, 12), (3, 30))]
    with torch.no_grad():  # before patching: RoPE is patched module-wide, also for `ref`
        expected = [(ref(ids, use_cache=False).logits, model(ids, use_cache=False).logits) for ids in inputs]
    try:
        lt.apply_liger_kernel_to_llama(model=model, flash_attention=flash)
        batch = torch.export.Dim("batch", min=1, max=16)
        seq = torch.export.Dim("seq", min=1, max=64)
        with torch.no_grad():
            ep = torch.export.export(model, (inputs[1],), {"use_cache": False},
                                     dynamic_shapes={"input_ids": {0: batch, 1: seq}, "use_cache": None})
        wanted = {"rms_norm", "rope", "swiglu"} | ({"flash_attn"} if flash else set())
        assert wanted <= set(tl.liger_ops_in(str(ep.graph))), str(ep.graph)
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        with torch.no_grad():
            for ids, (r, b) in zip(inputs, expected):
                check(ep.module()(ids, use_cache=False).logits, models, r, b, f"HF exported {tuple(ids.shape)}")
                check(compiled(ids, use_cache=False).logits, models, r, b, f"HF compiled {tuple(ids.shape)}")
    finally:
        monkey_patch._revert_patches()


# ---- CUDA (the lead runs these on the H200): bf16, attention liger_flash


@pytest.fixture(scope="module")
def cuda_models():
    return Models("cuda", torch.bfloat16, "liger_flash")


@gpu
@in_child
def test_gpu_eager_and_training_match_unpatched(cuda_models):
    m = cuda_models
    for batch, seq in ((2, 12), (1, 1), (3, 64)):
        ids = _ids(batch, seq, "cuda")
        with torch.no_grad():
            check(m.liger(ids), m, *m.logits(ids), f"CUDA eager {batch}x{seq}")
    ids, labels = _ids(2, 33, "cuda")[:, :-1], _ids(2, 33, "cuda")[:, 1:]
    m.liger.train()
    loss, grads = loss_and_grads(m.liger, ids, labels)
    m.liger.eval()
    check_training(m, ids, labels, loss, grads, "CUDA eager training")


def _decode_reference(models, batch, prompt, steps):
    ids = _ids(batch, prompt + steps, "cuda")
    ref, baseline = models.logits(ids)
    return ids, ref, baseline


@gpu
@in_child
def test_gpu_cuda_graph_decode_step(cuda_models):
    m = cuda_models
    decoding = _load_example("cuda_graph_decode")
    prompt, steps = 8, 6
    ids, ref, baseline = _decode_reference(m, 1, prompt, steps)
    cache = m.liger.new_cache(1)
    with torch.no_grad():
        m.liger.prefill(ids[:, :prompt], cache)
    step = decoding.graphed_decode(m.liger, cache)
    for i in range(prompt, prompt + steps):
        out = step(ids[:, i:i + 1], torch.tensor([i], device="cuda")).clone()
        check(out, m, ref[:, i:i + 1], baseline[:, i:i + 1], f"CUDA graph decode position {i}")
    # the example's greedy loop: graph replay gives eager's tokens
    prompt_ids = ids[:, :prompt]
    eager_tokens, _ = decoding.generate(m.liger, prompt_ids, 8, "eager")
    graph_tokens, _ = decoding.generate(m.liger, prompt_ids, 8, "graph")
    assert torch.equal(graph_tokens, eager_tokens)


@gpu
@in_child
def test_gpu_export_torchscript_and_cpp(cuda_models, cpp_programs, tmp_path):
    m = cuda_models
    ep = _load_example("export").export_model(m.liger)
    assert LIGER_OPS | {"flash_attn"} <= set(tl.liger_ops_in(str(ep.graph)))
    torch.export.save(ep, tmp_path / "ep.pt2")
    exported = torch.export.load(tmp_path / "ep.pt2").module()
    scripted = torch.jit.script(m.liger)
    scripted.save(str(tmp_path / "llama.pt"))
    loaded = torch.jit.load(str(tmp_path / "llama.pt"))
    for batch, seq in ((1, 1), (2, 16), (4, 61)):
        ids = _ids(batch, seq, "cuda")
        ref, baseline = m.logits(ids)
        with torch.no_grad():
            check(exported(ids), m, ref, baseline, f"CUDA export {batch}x{seq}")
            check(loaded(ids), m, ref, baseline, f"CUDA TorchScript {batch}x{seq}")
    ids = _ids(2, 16, "cuda")
    torch.save(ids.cpu(), tmp_path / "ids.pt")
    out = run_checked([cpp_programs["liger_llama_torchscript"], tmp_path / "llama.pt", tmp_path / "ids.pt", "--device",
                "cuda"], timeout=300)
    assert "device cuda" in out.splitlines()[0]
    check(parse_logits(out), m, *m.logits(ids), "C++ TorchScript on CUDA")


@gpu
@in_parent
def test_gpu_compile_fullgraph_forward_and_training_step(cuda_models):
    m = cuda_models
    torch._dynamo.reset()
    model = tl.same_weights(m.liger, "liger_aot").train()
    ids, labels = _ids(2, 33, "cuda")[:, :-1], _ids(2, 33, "cuda")[:, 1:]
    assert LIGER_OPS | {"flash_attn"} <= set(tl.liger_ops_in(_dynamo_graph(model, ids)))
    _check_compiled_training_step(m, model, ids, labels, "CUDA torch.compile")


@gpu
@in_parent
def test_gpu_compile_reduce_overhead_decode(cuda_models):
    m = cuda_models
    torch._dynamo.reset()
    prompt, steps = 8, 6
    ids, ref, baseline = _decode_reference(m, 1, prompt, steps)
    cache = m.liger.new_cache(1)
    with torch.no_grad():
        m.liger.prefill(ids[:, :prompt], cache)
    compiled = torch.compile(m.liger.decode, mode="reduce-overhead", fullgraph=True)
    with torch.no_grad():
        for i in range(prompt, prompt + steps):
            out = compiled(ids[:, i:i + 1], torch.tensor([i], device="cuda"), cache).clone()
            check(out, m, ref[:, i:i + 1], baseline[:, i:i + 1], f"reduce-overhead decode position {i}")


@gpu
@in_parent
def test_gpu_aoti_package_from_python_and_cpp(cuda_models, cpp_programs, tmp_path):
    # Compiling the package needs Triton (Inductor's CUDA code); the C++ program loading it does not.
    m = cuda_models
    path = _load_example("aoti_package").build_package(m.liger, str(tmp_path / "llama_cuda.pt2"))
    runner = torch._inductor.aoti_load_package(path)
    for batch, seq in ((1, 1), (2, 16), (4, 61)):
        ids = _ids(batch, seq, "cuda")
        with torch.no_grad():
            check(runner(ids), m, *m.logits(ids), f"CUDA AOTInductor {batch}x{seq}")
    ids = _ids(2, 16, "cuda")
    torch.save(ids.cpu(), tmp_path / "ids.pt")
    out = run_checked([cpp_programs["liger_llama_aoti"], path, tmp_path / "ids.pt", "--device", "cuda"], timeout=300)
    check(parse_logits(out), m, *m.logits(ids), "C++ AOTInductor on CUDA")


# ---- the runners: a Triton-free child process, and a fresh venv with the wheel


def child_command(marker=None):
    """python -c ... running this file's tests (those of `marker`, else all) with Triton blocked, and failing if
    anything imported it all the same."""
    args = [str(Path(__file__)), "-q", "-rfEs", "-p", "no:cacheprovider"] + (["-m", marker] if marker else [])
    code = BLOCK_TRITON + textwrap.dedent(f"""\
        import pytest
        rc = pytest.main({args!r})
        if sys.modules.get("triton") is not None:
            print("FAILED: triton was imported during the run")
            rc = 1
        sys.exit(rc)
    """)
    return ["-c", code]


@pytest.mark.skipif(CHILD, reason="this is the child")
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=gpu)])
def test_paths_without_triton(device):
    env = dict(os.environ, **{CHILD_ENV: "1"})
    package_parent = str(Path(liger_aot.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [package_parent, env.get("PYTHONPATH", "")] if p)
    proc = subprocess.run([sys.executable, *child_command("not gpu" if device == "cpu" else "gpu")], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-12000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, proc.stdout[-6000:]
    print(f"child ({device}, triton blocked): {summary}")


def _distribution_closure(names):
    """Installed distributions needed by `names` (their requirements, recursively, markers of this interpreter),
    Triton left out."""
    from packaging.requirements import Requirement

    seen, todo = {}, list(names)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen or key in ("triton", "pytorch-triton"):
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen[key] = dist
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return list(seen.values())


def _link_packages(dists, target: Path):
    """Symlinks each distribution's top-level files and directories (and its .dist-info) into target."""
    target.mkdir(parents=True, exist_ok=True)
    for dist in dists:
        for f in dist.files or []:
            top = Path(f).parts[0]
            if top == ".." or top.endswith(".pth") or top == "__pycache__":
                continue
            src = Path(dist.locate_file(top))
            dst = target / top
            if src.exists() and not dst.exists():
                dst.symlink_to(src)


@pytest.mark.slow
@pytest.mark.skipif(CHILD, reason="this is the child")
@pytest.mark.skipif(not os.environ.get("LIGER_WHEEL"), reason="set LIGER_WHEEL=<path of a built liger_aot wheel>")
def test_wheel_in_fresh_venv_without_triton(tmp_path):
    """LIGER_WHEEL installed with pip into a new venv (no system site-packages) whose only other packages are this
    interpreter's torch and pytest (and transformers, when installed), with their requirements, reached through a
    .pth file of symlinks: an offline stand-in for `pip install torch==<this torch>` that leaves Triton out (torch's
    CUDA wheels require it; the .pth skips it). The child then runs from the installed wheel. LIGER_WHEEL_ARCHS
    (e.g. "9.0") names the archs the wheel must hold."""
    wheel = Path(os.environ["LIGER_WHEEL"]).resolve()
    assert wheel.is_file(), f"LIGER_WHEEL={wheel} is not a file"
    venv = tmp_path / "venv"
    run_checked([sys.executable, "-m", "venv", venv], timeout=300)
    python = venv / "bin" / "python"
    site = Path(run_checked([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], timeout=60).strip())
    wanted = ["torch", "pytest", "numpy"] + (["transformers"] if importlib.util.find_spec("transformers") else [])
    _link_packages(_distribution_closure(wanted), tmp_path / "linked")
    (site / "linked_packages.pth").write_text(str(tmp_path / "linked") + "\n")
    # nothing of this checkout on the path (a source tree's python/*.egg-info would pass for an installed liger-aot)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", CHILD_ENV)}
    run_checked([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], timeout=600, env=env, cwd=tmp_path)
    probe = run_checked([python, "-c", "import importlib.util, json, liger_aot; print(json.dumps({'file': liger_aot.__file__, "
                  "'triton': importlib.util.find_spec('triton') is not None, 'info': liger_aot.build_info()}))"],
                 timeout=300, env=env, cwd=tmp_path)
    found = json.loads(probe.strip().splitlines()[-1])
    assert Path(found["file"]).resolve().is_relative_to(site.resolve()), found["file"]
    assert not found["triton"], "triton is importable in the venv"
    info = found["info"]
    assert info["kernels"] and all(n > 0 for n in info["kernels"].values())
    for kernel in ("rms_norm", "rope", "swiglu", "flash_attn"):
        assert any(k.startswith(kernel) for k in info["kernels"]), (kernel, sorted(info["kernels"]))
    if os.environ.get("LIGER_WHEEL_ARCHS"):
        want = {f"sm_{a.replace('.', '')}" for a in os.environ["LIGER_WHEEL_ARCHS"].replace(",", ";").split(";") if a}
        assert {a.rstrip("a") for a in info["archs"]} == want, info["archs"]
    print("wheel build_info:", json.dumps({k: info[k] for k in ("version", "archs", "triton_version")}))

    env[CHILD_ENV] = "1"
    env["LIGER_DEPLOY_CPP_BUILD"] = str(tmp_path / "cpp_build")  # not kept: it links this venv's paths
    proc = subprocess.run([python, *child_command()], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-12000:]
    print("child from the wheel:", proc.stdout.strip().splitlines()[-1])
