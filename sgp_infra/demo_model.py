"""A tiny deterministic model server that speaks each ``endpoint_protocol``.

Why it exists: the README's main job (catalogue → API → inference) must be
reproducible on a laptop with no GPU, and the inference tests and the proxy
benchmark need real HTTP backends that behave exactly like a model server
would on the wire, only instantly and deterministically.

It echoes: a completion is ``greeting + prompt``, a chat answer is
``greeting + last user message``; embeddings come from a SHA-256 of each text;
a rerank score is the share of query words found in the document.  Streams
send the echo word by word.

Routes by protocol (all protocols answer ``GET /readyz``, ``/health``,
``/healthz``):

* ``SGP``: ``POST /predict`` (SGP v4 bodies: ``prompt``, ``chat_history`` +
  ``prompt``, ``texts``, ``query`` + ``chunks``; anything else is echoed
  back), ``POST /generate_streaming`` (SSE, one SGP completion chunk per word).
  A model's own ``predict_route``/``streaming_predict_route`` can be added
  (``predict_routes``/``streaming_routes``); a route that is both streams when
  the body says ``stream: true``.
* ``VLLM``: OpenAI-compatible ``/v1/completions``, ``/v1/chat/completions``
  (``stream: true`` → SSE ending with ``data: [DONE]``), ``/v1/embeddings``,
  ``GET /v1/models``.
* ``COHERE``: ``/v1/generate`` (``stream: true`` → newline-delimited JSON
  events), ``/v1/embed``, ``/v1/rerank``.

For VLLM and COHERE any other ``POST`` path is answered by the shape its last
segments name (``…/chat/completions``, ``…/completions``, ``…/embeddings``,
``…/generate``, ``…/embed``, ``…/rerank``), as the API decides a route's shape,
so one server stands in for every model of a protocol whatever its routes.

It is a raw ASGI app (no framework) so that, in the benchmark, the backend
costs as little as possible and the proxy's own overhead is what shows.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
from typing import Any, Awaitable, Callable, Iterable, Optional

import orjson

PROTOCOLS = ("SGP", "VLLM", "COHERE")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

#: Created timestamp in every OpenAI-shaped answer: fixed, so output is deterministic.
CREATED = 1_700_000_000
MAX_BODY = 32 * 1024 * 1024


class BadRequest(Exception):
    """A request the demo cannot answer: 400 with a JSON ``error``."""


def embed(text: str, dim: int = 8) -> list[float]:
    """A deterministic unit-range vector for ``text``."""
    digest = hashlib.sha256(text.encode()).digest()
    while len(digest) < dim:
        digest += hashlib.sha256(digest).digest()
    return [round(b / 127.5 - 1.0, 6) for b in digest[:dim]]


def overlap_score(query: str, document: str) -> float:
    """Share of the query's words that appear in the document (0..1)."""
    words = set(re.findall(r"\w+", query.lower()))
    if not words:
        return 0.0
    found = set(re.findall(r"\w+", document.lower()))
    return round(len(words & found) / len(words), 6)


def words(text: str) -> list[str]:
    """``text`` split into stream pieces that join back to it exactly."""
    return re.findall(r"\S+\s*|\s+", text) or [""]


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI / SGP content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _tokens(text: str) -> int:
    return len(text.split())


class DemoModel:
    """The ASGI app.  ``stream_gate``, if given, holds every stream after its
    first chunk until the event is set: tests use it to prove that chunks reach
    the client while the backend is still generating, without timing."""

    def __init__(self, protocol: str = "SGP", *, name: str = "demo", greeting: Optional[str] = None,
                 dim: int = 8, token_delay: float = 0.0, stream_gate: Optional[threading.Event] = None,
                 predict_routes: Iterable[str] = (), streaming_routes: Iterable[str] = ()):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}")
        self.protocol = protocol
        self.name = name
        self.greeting = os.environ.get("DEMO_GREETING", "") if greeting is None else greeting
        self.dim = dim
        self.token_delay = token_delay
        self.stream_gate = stream_gate
        self.requests = 0
        routes: dict[str, Callable[[dict[str, Any]], Any]] = {}
        if protocol == "SGP":
            predict, streaming = {"/predict", *predict_routes}, {"/generate_streaming", *streaming_routes}
            routes = {path: self.sgp_predict for path in predict - streaming}
            routes.update({path: self.sgp_stream for path in streaming - predict})
            routes.update({path: self.sgp_either for path in predict & streaming})
        elif protocol == "VLLM":
            routes = {"/v1/completions": self.openai_completions, "/v1/chat/completions": self.openai_chat,
                      "/v1/embeddings": self.openai_embeddings}
        else:
            routes = {"/v1/generate": self.cohere_generate, "/v1/embed": self.cohere_embed,
                      "/v1/rerank": self.cohere_rerank}
        self.routes = routes
        #: VLLM and COHERE: (path suffix, handler) for routes not in ``routes``; longest suffix first.
        self.suffixes: list[tuple[str, Callable[[dict[str, Any]], Any]]] = []
        if protocol == "VLLM":
            self.suffixes = [("/chat/completions", self.openai_chat), ("/completions", self.openai_completions),
                             ("/embeddings", self.openai_embeddings), ("/rerank", self.cohere_rerank)]
        elif protocol == "COHERE":
            self.suffixes = [("/generate", self.cohere_generate), ("/embed", self.cohere_embed),
                             ("/rerank", self.cohere_rerank)]

    def handler(self, path: str) -> Optional[Callable[[dict[str, Any]], Any]]:
        """The handler of a ``POST`` to ``path``: its own route, else the shape its suffix names."""
        found = self.routes.get(path)
        if found is None:
            trimmed = path.rstrip("/")
            found = next((h for suffix, h in self.suffixes if trimmed.endswith(suffix)), None)
        return found

    # --- ASGI -------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        self.requests += 1
        path, method = scope["path"], scope["method"]
        if method == "GET":
            if path in ("/readyz", "/health", "/healthz"):
                await _json(send, 200, {"status": "ok", "model": self.name})
            elif path == "/v1/models" and self.protocol == "VLLM":
                await _json(send, 200, {"object": "list", "data": [
                    {"id": self.name, "object": "model", "created": CREATED, "owned_by": "sgp-infra-demo"}]})
            else:
                await _json(send, 404, {"error": f"no route GET {path}"})
            return
        handler = self.handler(path) if method == "POST" else None
        if handler is None:
            await _json(send, 404, {"error": f"no route {method} {path} for protocol {self.protocol}"})
            return
        body = await _read_body(receive)
        if body is None:
            await _json(send, 413, {"error": "body too large"})
            return
        try:
            request = orjson.loads(body or b"{}")
            if not isinstance(request, dict):
                raise BadRequest("the body must be a JSON object")
            result = handler(request)
        except (orjson.JSONDecodeError, BadRequest) as exc:
            await _json(send, 400, {"error": str(exc)})
            return
        if isinstance(result, _Stream):
            await self._send_stream(send, result)
        else:
            await _json(send, 200, result)

    async def _send_stream(self, send: Send, stream: _Stream) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", stream.media_type.encode()), (b"cache-control", b"no-cache")]})
        for n, chunk in enumerate(stream.chunks):
            if n == 1 and self.stream_gate is not None:
                await asyncio.to_thread(self.stream_gate.wait, 60)
            elif n and self.token_delay:
                await asyncio.sleep(self.token_delay)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # --- shared echo logic --------------------------------------------------

    def echo(self, text: str) -> str:
        return f"{self.greeting}{text}"

    # --- SGP ---------------------------------------------------------------------

    def sgp_predict(self, req: dict[str, Any]) -> Any:
        if "texts" in req:
            texts = _str_list(req, "texts")
            return {"embeddings": [embed(t, self.dim) for t in texts], "tokens_used": sum(map(_tokens, texts))}
        if "query" in req and "chunks" in req:
            query = _str(req, "query")
            return {"chunk_scores": [overlap_score(query, c) for c in _str_list(req, "chunks")],
                    "tokens_used": _tokens(query)}
        if "prompt" in req:
            prompt = _str(req, "prompt")
            text = self.echo(prompt)
            return {"completions": [[prompt, [text]]], "finish_reason": "stop",
                    "prompt_tokens": _tokens(prompt), "response_tokens": _tokens(text)}
        return {"echo": req, "model": self.name}

    def sgp_either(self, req: dict[str, Any]) -> Any:
        """A route that is both a model's predict and streaming route: the body's ``stream`` decides."""
        return self.sgp_stream(req) if req.get("stream") is True else self.sgp_predict(req)

    def sgp_stream(self, req: dict[str, Any]) -> _Stream:
        prompt = _str(req, "prompt")
        pieces = words(self.echo(prompt))
        events = []
        for n, piece in enumerate(pieces):
            last = n == len(pieces) - 1
            chunk: dict[str, Any] = {"completions": [[prompt, [piece]]], "finish_reason": "stop" if last else None}
            events.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        return _Stream(events, "text/event-stream")

    # --- VLLM (OpenAI) -------------------------------------------------------

    def openai_completions(self, req: dict[str, Any]) -> Any:
        prompt = req.get("prompt")
        if isinstance(prompt, list):
            prompt = "".join(p for p in prompt if isinstance(p, str))
        if not isinstance(prompt, str):
            raise BadRequest("'prompt' must be a string")
        text = self.echo(prompt)
        model = req.get("model") or self.name
        if req.get("stream"):
            chunks = [{"id": "cmpl-demo", "object": "text_completion", "created": CREATED, "model": model,
                       "choices": [{"index": 0, "text": piece, "logprobs": None,
                                    "finish_reason": "stop" if n == len(pieces) - 1 else None}]}
                      for pieces in [words(text)] for n, piece in enumerate(pieces)]
            return _Stream(_sse(chunks, done=True), "text/event-stream")
        return {"id": "cmpl-demo", "object": "text_completion", "created": CREATED, "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
                "usage": _usage(prompt, text)}

    def openai_chat(self, req: dict[str, Any]) -> Any:
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list")
        last_user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"),
                         messages[-1])
        prompt = _content_text(last_user.get("content") if isinstance(last_user, dict) else "")
        text = self.echo(prompt)
        model = req.get("model") or self.name
        if req.get("stream"):
            pieces = words(text)
            chunks = [{"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": CREATED,
                       "model": model, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                    "finish_reason": None}]}]
            chunks += [{"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": CREATED,
                        "model": model, "choices": [{"index": 0, "delta": {"content": piece},
                                                     "finish_reason": "stop" if n == len(pieces) - 1 else None}]}
                       for n, piece in enumerate(pieces)]
            return _Stream(_sse(chunks, done=True), "text/event-stream")
        return {"id": "chatcmpl-demo", "object": "chat.completion", "created": CREATED, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": _usage(prompt, text)}

    def openai_embeddings(self, req: dict[str, Any]) -> Any:
        inputs = req.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise BadRequest("'input' must be a string or a list of strings")
        return {"object": "list", "model": req.get("model") or self.name,
                "data": [{"object": "embedding", "index": i, "embedding": embed(t, self.dim)}
                         for i, t in enumerate(texts)],
                "usage": {"prompt_tokens": sum(map(_tokens, texts)), "total_tokens": sum(map(_tokens, texts))}}

    # --- COHERE -------------------------------------------------------------------

    def cohere_generate(self, req: dict[str, Any]) -> Any:
        prompt = _str(req, "prompt")
        text = self.echo(prompt)
        if req.get("stream"):
            lines = [orjson.dumps({"is_finished": False, "event_type": "text-generation", "text": piece}) + b"\n"
                     for piece in words(text)]
            lines.append(orjson.dumps({
                "is_finished": True, "event_type": "stream-end", "finish_reason": "COMPLETE",
                "response": {"id": "gen-demo", "generations": [
                    {"id": "gen-demo-0", "text": text, "finish_reason": "COMPLETE"}], "prompt": prompt},
            }) + b"\n")
            return _Stream(lines, "application/stream+json")
        return {"id": "gen-demo", "prompt": prompt,
                "generations": [{"id": "gen-demo-0", "text": text, "finish_reason": "COMPLETE"}],
                "meta": {"billed_units": {"input_tokens": _tokens(prompt), "output_tokens": _tokens(text)}}}

    def cohere_embed(self, req: dict[str, Any]) -> Any:
        texts = _str_list(req, "texts")
        return {"id": "embed-demo", "texts": texts, "embeddings": [embed(t, self.dim) for t in texts],
                "meta": {"billed_units": {"input_tokens": sum(map(_tokens, texts))}}}

    def cohere_rerank(self, req: dict[str, Any]) -> Any:
        query = _str(req, "query")
        docs = req.get("documents")
        if not isinstance(docs, list):
            raise BadRequest("'documents' must be a list")
        texts = [d if isinstance(d, str) else str((d or {}).get("text", "")) for d in docs]
        results = sorted(({"index": i, "relevance_score": overlap_score(query, t)} for i, t in enumerate(texts)),
                         key=lambda r: (-r["relevance_score"], r["index"]))
        top_n = req.get("top_n")
        if isinstance(top_n, int) and top_n >= 0:
            results = results[:top_n]
        return {"id": "rerank-demo", "results": results, "meta": {"billed_units": {"search_units": 1}}}


class _Stream:
    def __init__(self, chunks: list[bytes], media_type: str):
        self.chunks = chunks
        self.media_type = media_type


def _sse(chunks: Iterable[dict[str, Any]], *, done: bool) -> list[bytes]:
    out = [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks]
    if done:
        out.append(b"data: [DONE]\n\n")
    return out


def _usage(prompt: str, text: str) -> dict[str, int]:
    p, c = _tokens(prompt), _tokens(text)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _str(req: dict[str, Any], key: str) -> str:
    value = req.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string")
    return value


def _str_list(req: dict[str, Any], key: str) -> list[str]:
    value = req.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"'{key}' must be a list of strings")
    return value


async def _read_body(receive: Receive) -> Optional[bytes]:
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(parts)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        parts.append(chunk)
        if not message.get("more_body"):
            return b"".join(parts)


async def _json(send: Send, status: int, body: Any) -> None:
    data = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
