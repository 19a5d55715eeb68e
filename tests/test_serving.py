"""jaxnet serve on 127.0.0.1: answers equal to the export's (JSON and .npy), concurrent requests
batched into fewer calls with every answer right, one-line 4xx for bad requests while serving
goes on, and the Batcher's gathering, splitting and failures checked call by call."""

import asyncio
import concurrent.futures
import http.client
import io
import json
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import REPO, run_cli

import jaxnet as jn
from jaxnet import serving
from jaxnet.exported import ExportedModel

NAMES = [f"class {i}" for i in range(10)]


def _model_files(directory):
    net = jn.mlp([16, 10], flatten_input=True, input_scale=1 / 255)
    theta = net.init(jax.random.key(0), (28, 28))
    saved = jn.save_model(directory / "m.jaxnet", net, theta, input_shape=(28, 28),
                          input_dtype="uint8", class_names=NAMES)
    return net, theta, saved


def _start(path, *args):
    proc = subprocess.Popen([sys.executable, "-m", "jaxnet.cli", "serve", str(path), "--port",
                             "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    line = proc.stdout.readline()
    assert line.startswith(f"serving {path} on http://127.0.0.1:"), line + proc.stderr.read()
    return proc, int(line.split("http://127.0.0.1:")[1].split()[0])


def _stop(proc):
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``jaxnet serve`` of a saved model (exported to StableHLO on start), waiting up to
    5 ms per call for more requests, bodies up to 1 MB."""
    directory = tmp_path_factory.mktemp("serve")
    net, theta, saved = _model_files(directory)
    model = jn.load_exported(jn.export(net, theta, directory / "m.stablehlo",
                                       input_shape=(28, 28), class_names=NAMES))
    proc, port = _start(saved, "--max-delay-ms", "5", "--max-request-mb", "1")
    yield port, model
    code, out, err = _stop(proc)
    assert code == 0, err
    assert out.splitlines()[-1].startswith("served {")


def _request(port, method, path, body=None, content_type="application/json"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body, {"Content-Type": content_type} if body is not None else {})
    response = conn.getresponse()
    return response.status, response.getheader("Content-Type"), response.read()


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28)).astype(np.uint8)


def test_json_and_npy_answers_equal_the_export(server):
    port, model = server
    x = _images(3)
    status, kind, body = _request(port, "POST", "/predict",
                                  json.dumps({"inputs": x.tolist(), "id": "abc"}))
    assert status == 200 and kind == "application/json"
    answer = json.loads(body)
    np.testing.assert_allclose(answer["outputs"], model(x), rtol=1e-5, atol=1e-5)
    assert answer["classes"] == [NAMES[i] for i in np.argmax(model(x), axis=1)]
    assert answer["id"] == "abc"
    status, _, body = _request(port, "POST", "/predict", json.dumps({"inputs": x[0].tolist()}))
    one = json.loads(body)
    assert status == 200 and "id" not in one and isinstance(one["classes"], str)
    np.testing.assert_allclose(one["outputs"], model(x[0]), rtol=1e-5, atol=1e-5)
    buffer = io.BytesIO()
    np.save(buffer, x)
    status, kind, body = _request(port, "POST", "/predict", buffer.getvalue(), serving.NPY)
    assert status == 200 and kind == serving.NPY
    np.testing.assert_allclose(np.load(io.BytesIO(body)), model(x), rtol=1e-5, atol=1e-5)


def test_concurrent_requests_are_batched_and_every_answer_is_right(server):
    port, model = server
    images = _images(64, seed=1)
    expected = model(images)
    _, _, before = _request(port, "GET", "/stats")
    before = json.loads(before)

    def client(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        wrong = 0
        for i in range(k, 64, 16):
            conn.request("POST", "/predict", json.dumps({"inputs": images[i].tolist(), "id": i}),
                         {"Content-Type": "application/json"})
            answer = json.loads(conn.getresponse().read())
            wrong += not (answer["id"] == i and np.allclose(answer["outputs"], expected[i],
                                                            rtol=1e-5, atol=1e-5))
        return wrong

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(client, range(16))) == 0
    _, _, after = _request(port, "GET", "/stats")
    after = json.loads(after)
    assert after["requests"] - before["requests"] == 64
    assert after["model_calls"] - before["model_calls"] < 64  # gathered into batches
    assert after["latency_ms"]["p99"] >= after["latency_ms"]["p50"] > 0


@pytest.mark.parametrize("body, content_type, status, message", [
    (b"{not json", "application/json", 400, "body: not JSON"),
    (b'{"x": 1}', "application/json", 400, 'body: expected a JSON object {"inputs": [...]}'),
    (b'{"inputs": [[1, 2], [3]]}', "application/json", 400, "inputs: a ragged list"),
    (b'{"inputs": []}', "application/json", 400, "inputs: expected a non-empty array"),
    (b'{"inputs": [[1, 2]]}', "application/json", 400,
     "inputs: expected shape (batch, 28, 28) uint8 or one example (28, 28), got (1, 2)"),
    (json.dumps({"inputs": np.full((28, 28), 0.5).tolist()}).encode(), "application/json",
     400, "inputs: expected uint8 values (integers), got float64 with fractional values"),
    (b"\x93NUMPY garbage", serving.NPY, 400, "body: not a .npy array"),
    (b"0" * (2 * 2 ** 20), "application/json", 413, "body: more than 1048576 bytes"),
])
def test_a_bad_request_gets_one_line_and_serving_goes_on(server, body, content_type, status,
                                                         message):
    port, model = server
    got, kind, answer = _request(port, "POST", "/predict", body, content_type)
    assert (got, kind) == (status, "application/json")
    error = json.loads(answer)["error"]
    assert error.startswith(message) and "\n" not in error
    x = _images(1)
    got, _, answer = _request(port, "POST", "/predict", json.dumps({"inputs": x.tolist()}))
    assert got == 200
    np.testing.assert_allclose(json.loads(answer)["outputs"], model(x), rtol=1e-5, atol=1e-5)


def test_metadata_health_and_wrong_method(server):
    port, model = server
    status, _, body = _request(port, "GET", "/metadata")
    assert status == 200 and json.loads(body)["input"] == {"shape": [None, 28, 28],
                                                           "dtype": "uint8"}
    assert json.loads(body)["class_names"] == NAMES
    assert json.loads(_request(port, "GET", "/health")[2]) == {"status": "ok"}
    assert _request(port, "GET", "/predict")[0] == 405


def test_serving_an_onnx_export_and_a_busy_port(tmp_path):
    net, theta, _ = _model_files(tmp_path)
    path = jn.export(net, theta, tmp_path / "m.onnx", input_shape=(28, 28), format="onnx")
    proc, port = _start(path, "--max-batch", "8")
    try:
        x = _images(20)
        status, _, body = _request(port, "POST", "/predict", json.dumps({"inputs": x.tolist()}))
        assert status == 200
        np.testing.assert_allclose(json.loads(body)["outputs"], jn.predict(net, theta, x),
                                   rtol=1e-4, atol=1e-4)
        fixed = run_cli("serve", str(path), "--probabilities")
        assert fixed.returncode == 2 and fixed.stderr.strip().startswith(
            "jaxnet serve: error: argument --probabilities: applies to a saved model;")
        busy = run_cli("serve", str(path), "--port", str(port))
        assert busy.returncode == 2
        assert busy.stderr.strip().startswith(f"jaxnet serve: error: --port: cannot listen on "
                                              f"127.0.0.1:{port}")
    finally:
        assert _stop(proc)[0] == 0


# --- the Batcher, call by call -------------------------------------------------------------

def _counting(model):
    """``model`` with a record of the batch sizes its program was called with."""
    calls = []

    def run(x, params):
        calls.append(len(x))
        return model.run(x)

    return ExportedModel(model.header, run), calls


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    net = jn.mlp([8, 3])
    theta = net.init(jax.random.key(0), (5,))
    return jn.load_exported(jn.export(net, theta, tmp_path_factory.mktemp("b") / "m.stablehlo",
                                      input_shape=(5,)))


def _serve_requests(batcher, requests):
    async def main():
        task = asyncio.create_task(batcher.run())
        await asyncio.sleep(0)
        try:
            return await asyncio.gather(*(batcher.predict(x) for x in requests),
                                        return_exceptions=True)
        finally:
            task.cancel()
    return asyncio.run(main())


def test_batcher_gathers_splits_and_pads(small_model):
    rng = np.random.default_rng(0)
    requests = [rng.normal(size=(n, 5)).astype(np.float32) for n in (1, 2, 5)]
    model, calls = _counting(small_model)
    batcher = serving.Batcher(model, max_batch=64, max_delay_ms=50)
    answers = _serve_requests(batcher, requests)
    assert calls == [8]  # 1 + 2 + 5 examples in one call, padded to a compiled size
    for x, y in zip(requests, answers, strict=True):
        np.testing.assert_allclose(y, small_model(x), rtol=1e-6, atol=1e-6)
    # at most 4 per call: 3 + 3 do not fit together; 10 alone is cut into 4, 4, 2
    model, calls = _counting(small_model)
    batcher = serving.Batcher(model, max_batch=4, max_delay_ms=50)
    requests = [rng.normal(size=(n, 5)).astype(np.float32) for n in (3, 3, 10)]
    answers = _serve_requests(batcher, requests)
    assert calls == [4, 4, 4, 4, 2] and batcher.calls == 5 and batcher.sizes == [1, 2, 4]
    for x, y in zip(requests, answers, strict=True):
        np.testing.assert_allclose(y, small_model(x), rtol=1e-6, atol=1e-6)


def test_a_failing_call_fails_its_requests_only(small_model):
    state = {"fail": True}

    def run(x, params):
        if state.pop("fail", False):
            raise RuntimeError("device lost")
        return small_model.run(x)

    batcher = serving.Batcher(ExportedModel(small_model.header, run), max_delay_ms=20)
    x = np.ones((2, 5), np.float32)
    first = _serve_requests(batcher, [x, x])
    assert all(isinstance(a, RuntimeError) for a in first)
    second = _serve_requests(batcher, [x])
    np.testing.assert_allclose(second[0], small_model(x), rtol=1e-6)


def test_short_calls_run_on_the_event_loop(small_model):
    """Timed at warm-up, this model's calls take microseconds: they run on the loop (the
    thread that called it); untimed or slow sizes go to the worker thread."""
    import threading

    threads = []

    def run(x, params):
        threads.append(threading.current_thread().name)
        return small_model.run(x)

    batcher = serving.Batcher(ExportedModel(small_model.header, run), max_batch=8)
    assert not batcher.runs_inline(3)
    x = np.ones((3, 5), np.float32)
    np.testing.assert_allclose(_serve_requests(batcher, [x])[0], small_model(x), rtol=1e-6)
    assert threads[-1].startswith("jaxnet-serve")
    batcher.warm_up()
    assert sorted(batcher.call_seconds) == [1, 2, 4, 8]
    assert batcher.call_seconds[4] < serving.INLINE_CALL_SECONDS and batcher.runs_inline(3)
    np.testing.assert_allclose(_serve_requests(batcher, [x])[0], small_model(x), rtol=1e-6)
    assert threads[-1] == "MainThread"
    batcher.call_seconds[4] = serving.INLINE_CALL_SECONDS * 2
    assert not batcher.runs_inline(3)


def test_the_command_lines_defaults_are_the_servers():
    from jaxnet.cli import build_parser

    args = build_parser().parse_args(["serve", "m"])
    assert (args.max_batch, args.max_delay_ms, args.max_request_mb * 2 ** 20) == (
        serving.MAX_BATCH, serving.MAX_DELAY_MS, serving.MAX_REQUEST_BYTES)
