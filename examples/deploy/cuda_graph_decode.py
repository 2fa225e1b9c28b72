"""Greedy decoding with a static KV cache, one token per step, each step replayed from a CUDA graph.

    python examples/deploy/cuda_graph_decode.py [--mode graph|reduce-overhead|eager] [--steps 32]

``graph``: one ``torch.cuda.graph`` capture of ``model.decode``; a step copies the new token and position into the
captured input tensors and replays (the liger:: launches never sync the host or allocate outside PyTorch, so they
capture like ATen kernels). ``reduce-overhead``: ``torch.compile(mode="reduce-overhead")`` of the same step (needs
Triton, for Inductor). The tokens must be those of eager decoding.
"""
import argparse
import time

import torch

import liger_aot  # noqa: F401  (registers torch.ops.liger.*)
from tiny_llama import LlamaConfig, TinyLlama


def graphed_decode(model: TinyLlama, cache, batch: int = 1):
    """A function ``step(token [B, 1], position [1]) -> logits [B, 1, vocab]`` replaying one captured decode step.
    The logits tensor it returns is the graph's output buffer: the next replay overwrites it."""
    device = model.lm_head.weight.device
    token = torch.zeros(batch, 1, dtype=torch.long, device=device)
    # The warm-up below really runs and writes its k/v at this position: the cache's last slot, which a step
    # reaching it overwrites before attending to it (slots after a step's position are masked out).
    position = torch.full((1,), model.config.max_seq_len - 1, dtype=torch.long, device=device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():  # warm-up off the capture (loads the kernels)
        for _ in range(2):
            model.decode(token, position, cache)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        logits = model.decode(token, position, cache)

    def step(new_token: torch.Tensor, new_position: torch.Tensor) -> torch.Tensor:
        token.copy_(new_token)
        position.copy_(new_position)
        graph.replay()
        return logits

    return step


def generate(model: TinyLlama, prompt: torch.Tensor, steps: int, mode: str = "eager"):
    """Greedy tokens [B, steps] after ``prompt`` [B, S], and the host µs per step."""
    cache = model.new_cache(prompt.shape[0])
    with torch.no_grad():
        logits = model.prefill(prompt, cache)
    if mode == "graph":
        step = graphed_decode(model, cache, prompt.shape[0])
    elif mode == "reduce-overhead":
        compiled = torch.compile(model.decode, mode="reduce-overhead", fullgraph=True)
        step = lambda token, position: compiled(token, position, cache).clone()  # noqa: E731
    else:
        step = lambda token, position: model.decode(token, position, cache)  # noqa: E731
    token = logits[:, -1:].argmax(-1)
    position = torch.full((1,), prompt.shape[1], dtype=torch.long, device=prompt.device)
    tokens = []
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(steps):
            token = step(token, position).argmax(-1)
            tokens.append(token)
            position += 1
    torch.cuda.synchronize()
    return torch.cat(tokens, 1), (time.perf_counter() - t0) / steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("graph", "reduce-overhead", "eager"), default="graph")
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()
    model = TinyLlama(LlamaConfig(max_seq_len=256), "liger_aot", "liger_flash").to("cuda", torch.bfloat16).eval()
    prompt = torch.randint(0, model.config.vocab_size, (1, 16), device="cuda")
    expected, eager_us = generate(model, prompt, args.steps, "eager")
    tokens, us = generate(model, prompt, args.steps, args.mode)
    print(f"{args.mode}: {us:.1f} µs per token (eager {eager_us:.1f} µs); tokens {tokens[0].tolist()}")
    print("same tokens as eager:", torch.equal(tokens, expected))


if __name__ == "__main__":
    main()
