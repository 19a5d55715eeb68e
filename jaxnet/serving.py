"""``jaxnet serve``: an exported model behind HTTP, concurrent requests batched into one call.

The server is Starlette on uvicorn (``pip install "jaxnet[serve]"``): both maintained by the
encode project, ASGI on one asyncio event loop, few dependencies (no pydantic). One event
loop is what request batching wants: every request hands its examples to one
:class:`Batcher`, which gathers what has arrived (up to ``max_batch`` examples, waiting at
most ``max_delay_ms`` after the first) into one call of the compiled program, run in a worker
thread while the loop keeps reading requests (or on the loop, for a call shorter than
:data:`INLINE_CALL_SECONDS`). Batches are padded to a power of two (or to
the export's fixed batch size), so the program is compiled for a few sizes only, all of them
before the server accepts its first request.

Endpoints (127.0.0.1 by default; there is no authentication):

- ``POST /predict``: a JSON body ``{"inputs": ...}`` (a batch, or one example) answers
  ``{"outputs": ...}`` (and ``"classes"``, the names of the largest outputs, when the export
  has class names; and the request's ``"id"``, if it has one, for a client that matches
  answers to requests out of order); a body of ``Content-Type: application/x-npy``
  (``np.save``) answers the outputs as ``.npy``. A malformed request gets a 4xx with
  ``{"error": "<one line>"}``.
- ``GET /metadata``: the export's header (input shape and dtype, outputs, class names).
- ``GET /stats``: requests, examples, model calls, mean batch, p50/p99 latency (ms, the
  last 10,000 requests, from the request's arrival to its answer) and requests per second.
- ``GET /health``: ``{"status": "ok"}``.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import io
import json
import math
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from jaxnet.exported import ExportedModel

__all__ = ["Batcher", "make_app", "serve", "NPY", "INLINE_CALL_SECONDS", "MAX_BATCH",
           "MAX_DELAY_MS", "MAX_REQUEST_BYTES"]

NPY = "application/x-npy"
"""The content type of a ``.npy`` request or answer."""
MAX_BATCH = 64
"""Default most examples per call (``jaxnet serve --max-batch``)."""
MAX_DELAY_MS = 1.0
"""Default wait for more requests after a call's first (``--max-delay-ms``)."""
MAX_REQUEST_BYTES = 64 * 2 ** 20
"""Default largest request body; a larger one gets 413 (``--max-request-mb``)."""
INLINE_CALL_SECONDS = 1e-3
"""A call of the program shorter than this (timed at start-up, per batch size) runs on the
event loop; a longer one in a worker thread, while the loop reads the next requests. Handing a
call to a thread and back costs more than a short call: the tutorial's MLP, one request per
call, served 3,400 requests/s through the thread and 6,800 on the loop; an LSTM over 200
tokens (0.3 ms a call) 1,660 and 2,360. Batches of 32 (3 ms for the LSTM) served the same
either way."""


class Batcher:
    """Gathers the examples of concurrent requests into calls of ``model``.

    Args:
        model: what :func:`jaxnet.load_exported` returned.
        max_batch: the most examples per call (the export's batch size, if it has one).
        max_delay_ms: how long a call waits for more requests after its first one; what is
            queued while the previous call runs is taken without waiting.
    """

    def __init__(self, model: ExportedModel, *, max_batch: int = MAX_BATCH,
                 max_delay_ms: float = MAX_DELAY_MS):
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch: expected an integer >= 1, got {max_batch!r}")
        if not max_delay_ms >= 0:
            raise ValueError(f"max_delay_ms: expected a number >= 0, got {max_delay_ms!r}")
        self.model = model
        self.max_batch = model.batch_size or max_batch
        self.max_delay = max_delay_ms / 1000
        self.sizes = ([model.batch_size] if model.batch_size else
                      sorted({min(2 ** k, max_batch) for k in range(max_batch.bit_length() + 1)}))
        self.calls = self.examples = 0
        self.call_seconds: dict[int, float] = {}
        self._queue: asyncio.Queue | None = None
        self._carry = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="jaxnet-serve")

    def warm_up(self) -> None:
        """Compile the program for every padded batch size now, and time a call of each:
        the sizes whose call takes under :data:`INLINE_CALL_SECONDS` run on the event loop."""
        example = self.model.input_shape[1:]
        for size in self.sizes:
            batch = np.zeros((size, *example), self.model.input_dtype)
            self.model.run(batch)
            times = []
            for _ in range(3):
                start = time.perf_counter()
                self.model.run(batch)
                times.append(time.perf_counter() - start)
            self.call_seconds[size] = sorted(times)[1]

    async def predict(self, x: np.ndarray) -> np.ndarray:
        """The outputs for the batch ``x``, computed with whatever else is queued."""
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((x, future))
        return await future

    async def run(self) -> None:
        """Serve the queue until cancelled."""
        self._queue = asyncio.Queue()
        while True:
            items = await self._gather()
            batch = np.concatenate([x for x, _ in items])
            try:
                if self.runs_inline(len(batch)):
                    y = self._call(batch)
                else:
                    y = await asyncio.get_running_loop().run_in_executor(
                        self._executor, self._call, batch)
            except Exception as err:  # every waiting request gets the error; serving goes on
                for _, future in items:
                    if not future.done():
                        future.set_exception(err)
                continue
            start = 0
            for x, future in items:
                if not future.done():  # a client that went away leaves a cancelled future
                    future.set_result(y[start:start + len(x)])
                start += len(x)

    def runs_inline(self, n: int) -> bool:
        """Whether a batch of ``n`` examples is one call short enough for the event loop
        (:data:`INLINE_CALL_SECONDS`; a size not timed by :meth:`warm_up` is not)."""
        size = next((s for s in self.sizes if s >= n), None)
        return self.call_seconds.get(size, float("inf")) < INLINE_CALL_SECONDS

    async def _gather(self) -> list:
        loop = asyncio.get_running_loop()
        first = self._carry if self._carry is not None else await self._queue.get()
        self._carry, items, n = None, [first], len(first[0])
        deadline = loop.time() + self.max_delay
        while n < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if n + len(item[0]) > self.max_batch:
                self._carry = item
                break
            items.append(item)
            n += len(item[0])
        return items

    def _call(self, batch: np.ndarray) -> np.ndarray:
        """The model on ``batch`` in chunks of at most ``max_batch``, each padded to one of
        the compiled sizes."""
        outputs = []
        for start in range(0, len(batch), self.max_batch):
            chunk = batch[start:start + self.max_batch]
            size = next(s for s in self.sizes if s >= len(chunk))
            padded = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]),
                                                     chunk.dtype)])
            outputs.append(self.model.run(padded)[:len(chunk)])
            self.calls += 1
        self.examples += len(batch)
        return np.concatenate(outputs)


def make_app(model: ExportedModel, *, max_batch: int = MAX_BATCH,
             max_delay_ms: float = MAX_DELAY_MS, max_request_bytes: int = MAX_REQUEST_BYTES):
    """The Starlette application serving ``model`` (module docstring); its batcher runs in
    the application's lifespan."""
    import contextlib

    import orjson
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    batcher = Batcher(model, max_batch=max_batch, max_delay_ms=max_delay_ms)
    stats = _Stats()
    names = None if model.class_names is None else np.asarray(model.class_names)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(batcher.run())
        stats.started = time.perf_counter()
        try:
            yield
        finally:
            task.cancel()

    async def predict(request):
        arrived = time.perf_counter()
        try:
            body = await _body(request, max_request_bytes)
            npy = request.headers.get("content-type", "").split(";")[0].strip() == NPY
            inputs, request_id = _decode(body, npy)
            x, single = model.as_input(inputs, "inputs")
        except _RequestError as err:
            return JSONResponse({"error": str(err)}, status_code=err.status)
        except ValueError as err:
            return JSONResponse({"error": str(err).splitlines()[0]}, status_code=400)
        try:
            y = await batcher.predict(x)
        except Exception as err:
            return JSONResponse({"error": f"the model failed: {type(err).__name__}"},
                                status_code=500)
        y = y[0] if single else y
        stats.record(time.perf_counter() - arrived)
        if npy:
            buffer = io.BytesIO()
            np.save(buffer, y, allow_pickle=False)
            return Response(buffer.getvalue(), media_type=NPY)
        answer = {"outputs": np.ascontiguousarray(y)}
        if request_id is not None:
            answer["id"] = request_id
        if names is not None and y.shape[-1] == len(names):
            answer["classes"] = names[np.argmax(y, axis=-1)].tolist()
        return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json")

    async def metadata(request):
        return JSONResponse(model.header)

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def report(request):
        return JSONResponse(stats.report(batcher))

    routes = [Route("/predict", predict, methods=["POST"]),
              Route("/metadata", metadata), Route("/stats", report), Route("/health", health)]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.batcher, app.state.stats = batcher, stats
    return app


def serve(path, *, host: str = "127.0.0.1", port: int = 8000, max_batch: int = MAX_BATCH,
          max_delay_ms: float = MAX_DELAY_MS, max_request_bytes: int = MAX_REQUEST_BYTES,
          on_ready=print, label: str | None = None) -> None:
    """Serve the export at ``path`` over HTTP until interrupted (``jaxnet serve``).

    Compiles every batch size first, then binds ``host:port`` (port 0: any free port) and
    calls ``on_ready(line)`` with the address, e.g. ``serving m.stablehlo on
    http://127.0.0.1:8000`` (``label`` in place of the path, if given). On exit, ``on_ready``
    gets the statistics of ``/stats``."""
    import uvicorn

    from jaxnet.exported import load_exported

    model = load_exported(path)
    app = make_app(model, max_batch=max_batch, max_delay_ms=max_delay_ms,
                   max_request_bytes=max_request_bytes)
    app.state.batcher.warm_up()
    # what exists now (JAX, the program, the app) lives as long as the server: out of the
    # garbage collector's sight, a full collection no longer walks it (it took tens of ms,
    # the answers' p99 latency under load)
    gc.freeze()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        raise ValueError(f"--port: cannot listen on {host}:{port} ({err.strerror})") from None
    sock.listen(2048)  # connections wait in the backlog until the server's loop accepts them
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    bound = sock.getsockname()[1]
    on_ready(f"serving {label or path} on http://{host}:{bound} (max batch "
             f"{app.state.batcher.max_batch}, compiled for {app.state.batcher.sizes})")
    try:
        server.run(sockets=[sock])
    finally:
        on_ready("served " + json.dumps(app.state.stats.report(app.state.batcher)))


class _RequestError(ValueError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class _Stats:
    def __init__(self):
        self.latencies = collections.deque(maxlen=10_000)
        self.requests, self.started = 0, time.perf_counter()

    def record(self, seconds: float) -> None:
        self.requests += 1
        self.latencies.append(seconds)

    def report(self, batcher: Batcher) -> dict:
        ms = np.asarray(self.latencies) * 1000
        elapsed = time.perf_counter() - self.started
        return {"requests": self.requests, "examples": batcher.examples,
                "model_calls": batcher.calls,
                "mean_batch": batcher.examples / batcher.calls if batcher.calls else None,
                "latency_ms": {"p50": _percentile(ms, 50), "p99": _percentile(ms, 99)},
                "requests_per_s": self.requests / elapsed if elapsed > 0 else None}


def _percentile(values, q):
    return float(np.percentile(values, q)) if len(values) else None


async def _body(request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _RequestError(f"body: more than {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(body: bytes, npy: bool):
    """The request's examples and its ``id`` (None if it has none): a .npy array, or the
    ``inputs`` (and ``id``) of a JSON object."""
    if npy:
        try:
            return np.load(io.BytesIO(body), allow_pickle=False), None
        except ValueError:
            raise _RequestError("body: not a .npy array of numbers (np.save(f, x))") from None
    import orjson

    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _RequestError('body: not JSON; send {"inputs": [...]} or an .npy array with '
                            f"Content-Type: {NPY}") from None
    if not isinstance(request, dict) or "inputs" not in request:
        raise _RequestError('body: expected a JSON object {"inputs": [...]}')
    try:
        inputs = np.asarray(request["inputs"])
    except ValueError:
        raise _RequestError("inputs: a ragged list (the examples differ in shape)") from None
    if inputs.dtype == object or not math.prod(inputs.shape):
        raise _RequestError("inputs: expected a non-empty array of numbers")
    return inputs, request.get("id")
