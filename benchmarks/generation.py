"""Sampling text from the benchmark's character-level transformer: jaxnet's ``generate`` with
and without its key-value cache, against PyTorch eager with and without one, in one run.

    pip install -e ".[bench]"
    python benchmarks/generation.py --repeats 3 --out benchmarks/results/generation

The model is ``benchmarks/sequences.py``'s (GPT-2's pre-LN recipe: 4 blocks, width 128, 4 heads,
context 128, learned positions, 81 characters; random weights: only the speed is measured).
One prompt of 8 tokens is continued by 120 tokens (the text stays within the context: a cache
serves every token) and by 400 (past the context: the learned positions make the window slide,
so every framework recomputes the window for the tokens past position 128, as nanoGPT does).
Sampling at temperature 1, batch 1.

- ``jaxnet_cache``: ``jn.generate`` (the cache, then the sliding window; one compiled scan);
- ``jaxnet_window``: ``jn.generate(..., cache=False)`` (every token from the whole window);
- ``torch_cache``: PyTorch eager with a key-value cache per block
  (``F.scaled_dot_product_attention`` on the cached keys), ``torch.no_grad``;
- ``torch_window``: nanoGPT's ``generate``: the model on the last 128 tokens for each token.

Each framework runs in a fresh process; they alternate within each repeat. Per framework, min
and median over repeats of: ``ms_per_token`` (a steady call, the best of 3, over the tokens
generated), ``first_call_s`` (the first call of the process: tracing, compiling, running) and
``e2e_s`` (the process, start to end). Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _harness import REPO, machine, run_worker, stats, write_report

FRAMEWORKS = ("jaxnet_cache", "jaxnet_window", "torch_cache", "torch_window")
D, HEADS, LAYERS, CONTEXT, VOCAB, PROMPT = 128, 4, 4, 128, 81, 8
LENGTHS = (120, 400)


def _timed(generate, lengths) -> dict:
    out = {}
    for tokens in lengths:
        t = time.perf_counter()
        generate(tokens)
        first = time.perf_counter() - t
        steady = []
        for _ in range(3):
            t = time.perf_counter()
            generate(tokens)
            steady.append(time.perf_counter() - t)
        out[str(tokens)] = {"first_call_s": first, "ms_per_token": 1e3 * min(steady) / tokens}
    return out


def worker_jaxnet(args, cache: bool) -> dict:
    import jax
    import numpy as np

    import jaxnet as jn

    net = jn.transformer_lm(VOCAB, depth=LAYERS, width=D, num_heads=HEADS, context=CONTEXT)
    theta = net.init(jax.random.key(args.seed), (CONTEXT,))
    prompt = np.arange(PROMPT) % VOCAB

    def generate(tokens):
        ids = jn.generate(net, theta, prompt, tokens, key=jax.random.key(args.seed),
                          context=CONTEXT, cache=cache)
        return np.asarray(ids)

    return _timed(generate, LENGTHS)


def worker_torch(args, cache: bool) -> dict:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(args.seed)

    def heads(t):  # (batch, T, D) -> (batch, heads, T, D / heads)
        return t.view(t.shape[0], t.shape[1], HEADS, D // HEADS).transpose(1, 2)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
            self.qkv, self.o = nn.Linear(D, 3 * D, bias=False), nn.Linear(D, D, bias=False)
            self.w1, self.w2 = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

        def forward(self, x, kv=None):
            """``kv``: the cached keys and values of the earlier positions, or None (then
            ``x`` is the whole sequence, causal); returns the output and the new cache."""
            q, k, v = (heads(t) for t in self.qkv(self.ln1(x)).split(D, -1))
            if kv is not None:
                k, v = torch.cat([kv[0], k], 2), torch.cat([kv[1], v], 2)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=kv is None)
            x = x + self.o(a.transpose(1, 2).reshape(x.shape))
            return x + self.w2(F.gelu(self.w1(self.ln2(x)))), (k, v)

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(VOCAB, D)
            self.pos = nn.Parameter(0.02 * torch.randn(CONTEXT, D))
            self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
            self.lnf, self.out = nn.LayerNorm(D), nn.Linear(D, VOCAB, bias=False)

        def forward(self, ids, start=0, caches=None):
            x = self.emb(ids) + self.pos[start:start + ids.shape[1]]
            new = []
            for i, block in enumerate(self.blocks):
                x, kv = block(x, None if caches is None else caches[i])
                new.append(kv)
            return self.out(self.lnf(x)), new

    model = LM().eval()
    prompt = torch.arange(PROMPT)[None] % VOCAB

    @torch.no_grad()
    def generate(tokens):
        ids, caches = prompt, None
        for _ in range(tokens):
            t = ids.shape[1]
            if cache and t < CONTEXT:  # the new position through the cache
                if caches is None:
                    logits, caches = model(ids)
                else:
                    logits, caches = model(ids[:, -1:], start=t - 1, caches=caches)
            else:  # the window: nanoGPT's generate
                logits, _ = model(ids[:, -CONTEXT:])
            nxt = torch.multinomial(F.softmax(logits[:, -1], -1), 1)
            ids = torch.cat([ids, nxt], 1)
        return ids

    return {**_timed(generate, LENGTHS), "threads": torch.get_num_threads()}


WORKERS = {"jaxnet_cache": lambda a: worker_jaxnet(a, True),
           "jaxnet_window": lambda a: worker_jaxnet(a, False),
           "torch_cache": lambda a: worker_torch(a, True),
           "torch_window": lambda a: worker_torch(a, False)}


def measure(framework: str, args) -> dict:
    return run_worker(__file__, framework, "--seed", str(args.seed))


def summary(runs: list[dict]) -> dict:
    return {**{str(n): {key: stats([r[str(n)][key] for r in runs])
                        for key in ("ms_per_token", "first_call_s")} for n in LENGTHS},
            "e2e_s": stats([r["e2e_s"] for r in runs])}


def markdown(report: dict) -> str:
    s = report["summary"]
    lines = [f"Command: `{report['command']}`  ",
             f"Machine: {report['machine']}; {report['repeats']} repeats; min / median over "
             "repeats.", "",
             "| | " + " | ".join(f"{n} tokens: ms per token | {n} tokens: first call (s)"
                                 for n in LENGTHS) + " | end-to-end (s) |",
             "| --- " * (2 * len(LENGTHS) + 2) + "|"]
    for fw in FRAMEWORKS:
        cells = [f"{s[fw][str(n)][key]['min']:.{digits}f} / "
                 f"{s[fw][str(n)][key]['median']:.{digits}f}"
                 for n in LENGTHS for key, digits in (("ms_per_token", 2), ("first_call_s", 2))]
        lines.append(f"| {fw} | " + " | ".join(cells)
                     + f" | {s[fw]['e2e_s']['min']:.1f} / {s[fw]['e2e_s']['median']:.1f} |")
    lines += ["", "| steady speed (medians) | " + " | ".join(f"{n} tokens" for n in LENGTHS)
              + " |", "| --- " * (len(LENGTHS) + 1) + "|"]
    for name, ratio in report["ratios"].items():
        lines.append(f"| {name} | " + " | ".join(f"{ratio[str(n)]:.2f}x" for n in LENGTHS)
                     + " |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=sorted(WORKERS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "generation"))
    args = p.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return
    runs = {fw: [] for fw in FRAMEWORKS}
    for r in range(args.repeats):
        for fw in FRAMEWORKS:
            runs[fw].append(measure(fw, args))
            print(f"repeat {r + 1}/{args.repeats} {fw}: "
                  + ", ".join(f"{n} tokens {runs[fw][-1][str(n)]['ms_per_token']:.2f} ms/token"
                              for n in LENGTHS), file=sys.stderr)
    s = {fw: summary(v) for fw, v in runs.items()}

    def ratio(slow: str, fast: str) -> dict:  # how many times faster `fast` is per token
        return {str(n): s[slow][str(n)]["ms_per_token"]["median"]
                / s[fast][str(n)]["ms_per_token"]["median"] for n in LENGTHS}

    ratios = {"jaxnet's cache vs its window": ratio("jaxnet_window", "jaxnet_cache"),
              "jaxnet_cache vs torch_cache": ratio("torch_cache", "jaxnet_cache"),
              "jaxnet_cache vs torch_window (nanoGPT)": ratio("torch_window", "jaxnet_cache"),
              "torch's cache vs its window": ratio("torch_window", "torch_cache")}
    report = {"command": "python " + " ".join(["benchmarks/generation.py", *sys.argv[1:]]),
              "machine": machine(), "repeats": args.repeats, "runs": runs, "summary": s,
              "ratios": ratios}
    write_report(args.out, report, markdown(report))


if __name__ == "__main__":
    main()
