"""Where the end-to-end training step's peak memory is, for one provider (bench_e2e.py's model and patches).

    python3 scripts/e2e_memory.py liger_aot --shape 4x4096
    python3 scripts/e2e_memory.py liger_kernel --shape 4x4096

After two warm-up steps, one step is instrumented: the allocator's peak during the forward, then for every node of
the backward graph the memory allocated when it starts and the peak while it runs (pre-hooks and hooks on each
node; allocator statistics are host-side, so nothing is synchronized), then the AdamW step. Prints the step's
peak, where it happens, and the nodes whose transient memory (peak - start) is largest, by node type.
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
    args = p.parse_args()
    batch, seq = map(int, args.shape.split("x"))
    model, opt = E._build(E._patch(args.provider, "sdpa"))
    E._steps(model, opt, batch, seq, 2)
    ids = torch.randint(0, E.MODEL["vocab_size"], (batch, seq), device=E.DEVICE)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    loss = model(input_ids=ids, labels=ids).loss
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
