"""A bounded load test of ``jaxnet serve`` on 127.0.0.1: concurrent clients sending one example
per JSON request, every answer checked.

    python benchmarks/serve_load.py --out benchmarks/results/serve_load

The clients are `wrk <https://github.com/wg/wrk>`_ (``apt-get install wrk``): a Python client
spends as much CPU per request as the server does, and on a 2-core machine it, not the
server, was what the test measured (3,900 requests/s at 0.9 of a core). wrk's Lua script
(:data:`CHECK`) sends each request with an ``id``, which the server echoes, and compares
every answer's outputs with ``jaxnet.predict``'s for that example (rtol 1e-4, atol 1e-5); a
wrong answer, a non-200 status or a socket error counts as an error.

For each model (the tutorial's MLP, 784-64-64-10 on uint8 images rescaled inside; Keras's
convnet; an LSTM text classifier, 64 units over 200 token ids; a ResNet-20 on 32x32x3), with
initialised parameters saved by ``jaxnet.save_model``, and for each server setting (request
batching, up to ``--max-batch`` examples per compiled call; and one request per call,
``--max-batch 1``), ``--repeats`` times: a fresh ``jaxnet serve MODEL --port 0`` (which
exports the saved model to StableHLO and compiles its batch sizes: the start-up, reported),
then ``--clients`` connections for ``--seconds``. Reported: requests per second, p50 / p99
latency (wrk's), the server's mean batch (its ``/stats``), errors.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
from _harness import REPO, machine, stats, write_report

MODELS = ("mlp", "convnet", "lstm", "resnet20")
#: the shape of each model's examples (token ids for the LSTM)
SHAPES = {"mlp": (28, 28), "convnet": (28, 28), "lstm": (200,), "resnet20": (32, 32, 3)}
VOCAB = 20_000

CHECK = r"""
local bodies, expected, threads, counter = {}, {}, {}, 0
local rtol, atol = 1e-4, 1e-5
ok, wrong, non200 = 0, 0, 0  -- globals: what done() reads from each thread (thread:get)

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    local body, outs = line:match("^(.-)	(.*)$")
    local values = {}
    for v in outs:gmatch("[^,]+") do values[#values + 1] = tonumber(v) end
    bodies[#bodies + 1] = body
    expected[#expected + 1] = values
  end
  math.randomseed(seed)
end

function request()
  local body = bodies[math.random(#bodies)]
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1; return end
  local id = tonumber(body:match('"id":(%d+)'))
  local outs = body:match('"outputs":%[([^%]]*)%]')
  local want = id and expected[id + 1]
  local good, k = want ~= nil and outs ~= nil, 0
  if good then
    for v in outs:gmatch("[^,]+") do
      k = k + 1
      local a, b = tonumber(v), want[k]
      if a == nil or b == nil or math.abs(a - b) > atol + rtol * math.abs(b) then
        good = false
      end
    end
    good = good and k == #want
  end
  if good then ok = ok + 1 else wrong = wrong + 1 end
end

function done(summary, latency, requests)
  local total = {ok = 0, wrong = 0, non200 = 0}
  for _, t in ipairs(threads) do
    for key, _ in pairs(total) do total[key] = total[key] + t:get(key) end
  end
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %d, "seconds": %.6f, "ok": %d, "wrong": %d, ' ..
    '"non200": %d, "socket_errors": %d, "p50_ms": %.4f, "p99_ms": %.4f}\n',
    summary.requests, summary.duration / 1e6, total.ok, total.wrong, total.non200,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000))
end
"""


def network(name: str):
    import jaxnet as jn

    if name == "convnet":
        return jn.models.keras_convnet(10, (28, 28))
    if name == "lstm":
        return jn.models.text_classifier(VOCAB, 2, encoder="lstm", width=64)
    if name == "resnet20":
        return jn.models.resnet(20, 10, (32, 32, 3))
    return jn.mlp([64, 64, 10], flatten_input=True, input_scale=1 / 255)


def prepare(name: str, directory: str, count: int = 512):
    """The saved model and wrk's data file: per line, a request (with its ``id``) and
    jaxnet.predict's outputs for it. Fashion-MNIST's test images for the MLP and the
    convnet; random token ids and random CIFAR-shaped images for the others (no dataset
    of those shapes is on this machine)."""
    import jax

    import jaxnet as jn
    from jaxnet import data

    shape, rng = SHAPES[name], np.random.default_rng(0)
    if name == "lstm":
        x = rng.integers(1, VOCAB, (count, *shape), dtype=np.int32)
    elif shape == (28, 28):
        x = data.load("fashion_mnist").test.x[:count]
    else:
        x = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
    net = network(name)
    theta = net.init(jax.random.key(0), shape)
    path = jn.save_model(os.path.join(directory, f"{name}.jaxnet"), net, theta,
                         input_shape=shape, input_dtype=x.dtype)
    expected = np.asarray(jn.predict(net, theta, x))
    lines = [json.dumps({"id": i, "inputs": x[i].tolist()}, separators=(",", ":")) + "\t"
             + ",".join(repr(float(v)) for v in expected[i]) for i in range(count)]
    requests = os.path.join(directory, f"{name}.requests")
    with open(requests, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path, requests


def start_server(model_path: str, max_batch: int, max_delay_ms: float):
    """A ``jaxnet serve`` process, its port and its start-up seconds."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxnet.cli", "serve", model_path, "--port", "0",
         "--max-batch", str(max_batch), "--max-delay-ms", str(max_delay_ms)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    line = proc.stdout.readline()
    if not line.startswith("serving "):
        proc.kill()
        raise RuntimeError(f"jaxnet serve did not start: {line}{proc.stderr.read()[-2000:]}")
    port = int(line.split("http://127.0.0.1:")[1].split()[0])
    return proc, port, time.perf_counter() - started


def load(port: int, requests: str, script: str, clients: int, seconds: float) -> dict:
    """wrk with ``clients`` connections for ``seconds``: its RESULT line."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{clients}", f"-d{seconds:.0f}s", "--timeout", "10s", "-s", script,
         f"http://127.0.0.1:{port}/predict", "--", requests],
        capture_output=True, text=True, check=True).stdout
    result = json.loads(next(line for line in out.splitlines()
                             if line.startswith("RESULT "))[len("RESULT "):])
    return {**result, "requests_per_s": result["requests"] / result["seconds"],
            "errors": result["wrong"] + result["non200"] + result["socket_errors"]}


def one_run(model_path, requests, script, max_batch, args) -> dict:
    proc, port, startup = start_server(model_path, max_batch, args.max_delay_ms)
    try:
        result = load(port, requests, script, args.clients, args.seconds)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/stats")
        server = json.loads(conn.getresponse().read())
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    return {**result, "startup_s": startup, "mean_batch": server["mean_batch"],
            "server_p50_ms": server["latency_ms"]["p50"],
            "server_p99_ms": server["latency_ms"]["p99"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/serve_load")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-delay-ms", type=float, default=1.0)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("the load test needs wrk: apt-get install wrk")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "check.lua")
        with open(script, "w") as f:
            f.write(CHECK)
        for name in args.models:
            model_path, requests = prepare(name, tmp)
            for setting, max_batch in (("batched", args.max_batch), ("one per call", 1)):
                runs = [one_run(model_path, requests, script, max_batch, args)
                        for _ in range(args.repeats)]
                print(name, setting, runs, file=sys.stderr, flush=True)
                rows.append({"model": name, "setting": setting, "max_batch": max_batch,
                             "runs": runs, **{k: stats(r[k] for r in runs) for k in (
                                 "requests_per_s", "p50_ms", "p99_ms", "startup_s",
                                 "mean_batch")},
                             "errors": sum(r["errors"] for r in runs)})
    lines = [f"`jaxnet serve` under {args.clients} concurrent clients for {args.seconds:.0f} s, "
             f"one example per JSON request, every answer checked (min / median over "
             f"{args.repeats} servers); {machine()}.", "",
             "| model | server | requests/s | p50 latency (ms) | p99 latency (ms) | mean batch "
             "| start-up (s) | errors |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cell = lambda k, f, r=r: f"{r[k]['min']:{f}} / {r[k]['median']:{f}}"  # noqa: E731
        lines.append(f"| {r['model']} | {r['setting']} (max batch {r['max_batch']}) | "
                     f"{cell('requests_per_s', '.0f')} | {cell('p50_ms', '.1f')} | "
                     f"{cell('p99_ms', '.1f')} | {cell('mean_batch', '.1f')} | "
                     f"{cell('startup_s', '.1f')} | {r['errors']} |")
    for name in args.models:
        batched, single = (next(r for r in rows if r["model"] == name and r["setting"] == s)
                           for s in ("batched", "one per call"))
        ratio = batched["requests_per_s"]["median"] / single["requests_per_s"]["median"]
        lines.append(f"\n{name}: batching serves {ratio:.2f}x the requests per second of one "
                     f"request per call.")
    write_report(args.out, {"machine": machine(), "args": vars(args), "rows": rows},
                 "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
