"""Where the end-to-end training step's peak memory is, for one provider (bench_e2e.py's model and patches).

    python3 scripts/e2e_memory.py liger_aot --shape 4x4096
    python3 scripts/e2e_memory.py liger_kernel --shape 4x4096

After two warm-up steps, one step is instrumented: the allocator's peak during the forward, then for every node of
the backward graph the memory allocated when it starts and the peak while it runs (pre-hooks and hooks on each
node; allocator statistics are host-side, so nothing is synchronized), then the AdamW step. Prints the step's
peak, where it happens, and the nodes whose transient memory (peak - start) is largest, by node type.
--saved LAYER also lists what autograd keeps from the forward of model.layers.LAYER (by module, shape, strides and
storage; storages shared by several saved tensors count once). What nn.Linear layers save is listed under their
parent module: hooks on the projections would make liger_aot's MLP take its modular path.
"""
import argparse
import collections
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
import bench_e2e as E  # noqa: E402

GB = 1e9


def graph_nodes(root):
    seen, stack, out = set(), [root], []
    while stack:
        n = stack.pop()
        if n is None or n in seen:
            continue
        seen.add(n)
        out.append(n)
        stack.extend(nxt for nxt, _ in n.next_functions)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("provider", choices=E.PROVIDERS)
    p.add_argument("--shape", default="4x4096")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--saved", type=int, default=None, metavar="LAYER")
    args = p.parse_args()
    batch, seq = map(int, args.shape.split("x"))
    model, opt = E._build(E._patch(args.provider, "sdpa"))
    E._steps(model, opt, batch, seq, 2)
    ids = torch.randint(0, E.MODEL["vocab_size"], (batch, seq), device=E.DEVICE)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    saved, stack, handles = [], [], []
    if args.saved is not None:
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear):  # a hooked projection would turn liger_aot's fused MLP off
                continue
            handles.append(m.register_forward_pre_hook(lambda m, a, name=name: stack.append(name)))
            handles.append(m.register_forward_hook(lambda m, a, o: (stack.pop(), None)[1]))

    def pack(t):
        if stack and not (t.is_leaf and t.requires_grad):  # parameters are not activations
            saved.append((stack[-1], tuple(t.shape), t.stride(), str(t.dtype).removeprefix("torch."),
                          t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    for h in handles:
        h.remove()
    fwd_peak, after_fwd = torch.cuda.max_memory_allocated(), torch.cuda.memory_allocated()

    records = []  # (order, name, start, peak)
    current = {}

    def pre(node):
        def hook(grad_outputs):
            current[node] = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        return hook

    def post(node):
        def hook(grad_inputs, grad_outputs):
            records.append((len(records), node.name(), current.pop(node, 0), torch.cuda.max_memory_allocated()))
        return hook

    handles = []
    for n in graph_nodes(loss.grad_fn):
        handles += [n.register_prehook(pre(n)), n.register_hook(post(n))]
    torch.cuda.reset_peak_memory_stats()
    loss.backward()
    for h in handles:
        h.remove()
    after_bwd = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    opt.step()
    opt_peak = torch.cuda.max_memory_allocated()
    opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()

    if args.saved is not None:
        prefix = f"model.layers.{args.saved}"
        rows = [r for r in saved if r[0] == prefix or r[0].startswith(prefix + ".")]
        seen = set()
        print(f"saved by {prefix} (module, shape, strides, dtype, storage MB, first use of the storage):")
        for mod, shape, stride, dt, ptr, nbytes in rows:
            print(f"  {mod[len(prefix):] or '.':32s} {str(shape):24s} {str(stride):28s} {dt:9s} {nbytes / 1e6:9.1f} "
                  f"{'' if ptr in seen else 'new'}")
            seen.add(ptr)
        total = sum({ptr: nbytes for *_, ptr, nbytes in rows}.values())
        print(f"  unique storages: {total / 1e6:.1f} MB")

    bwd_peak = max(records, key=lambda r: r[3])
    print(f"{args.provider} {args.shape}: before forward {base / GB:.3f} GB, forward peak {fwd_peak / GB:.3f}, after "
          f"forward {after_fwd / GB:.3f}, backward peak {bwd_peak[3] / GB:.3f} (node {bwd_peak[0]} {bwd_peak[1]}, "
          f"start {bwd_peak[2] / GB:.3f}), after backward {after_bwd / GB:.3f}, AdamW peak {opt_peak / GB:.3f}")
    print(f"step peak {max(fwd_peak, bwd_peak[3], opt_peak) / GB:.3f} GB; {len(records)} backward nodes")
    print("backward nodes with the highest peaks (order, name, start GB, peak GB, transient MB):")
    for o, name, start, peak in sorted(records, key=lambda r: -r[3])[:args.top]:
        print(f"  {o:5d} {name[:60]:60s} {start / GB:8.3f} {peak / GB:8.3f} {(peak - start) / 1e6:9.1f}")
    by = collections.defaultdict(list)
    for _, name, start, peak in records:
        by[name].append(peak - start)
    print("transient memory by node type (count, max MB, mean MB):")
    for name, d in sorted(by.items(), key=lambda kv: -max(kv[1]))[:args.top]:
        print(f"  {name[:70]:70s} {len(d):4d} {max(d) / 1e6:9.1f} {sum(d) / len(d) / 1e6:9.1f}")
    print("the first 40 backward nodes (order, name, start GB, peak GB):")
    for o, name, start, peak in records[:40]:
        print(f"  {o:5d} {name[:60]:60s} {start / GB:8.3f} {peak / GB:8.3f}")


if __name__ == "__main__":
    main()
