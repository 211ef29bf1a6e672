"""Translation between the SGP request/response shapes and each model protocol.

Pure functions only: no I/O, no app state.  The flow for one request is

    client body ──parse_*──► Call ──backend_request──► (route kind, JSON body)
    backend JSON ──parse_result──► Result ──render_*──► client body
    backend stream event ──parse_delta──► Delta ──render_*_chunk──► client event

A *kind* names the shape a backend route speaks:

* ``sgp``: the SGP v4 bodies themselves (``endpoint_protocol: SGP``);
* ``openai-completions`` / ``openai-chat`` / ``openai-embeddings``: vLLM's
  OpenAI-compatible server (``endpoint_protocol: VLLM``);
* ``cohere-generate`` / ``cohere-embed`` / ``cohere-rerank``: Cohere's shapes
  (``endpoint_protocol: COHERE``; a VLLM route ending in ``/rerank`` speaks
  it too, as vLLM's rerank API does).

For VLLM and COHERE the kind follows from the route the request goes to
(``predict_route``, or ``streaming_predict_route`` when streaming) and, when
the route's name says nothing, from the model type.  ``docs/inference.md``
shows each mapping with an example.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ...catalog import Model
from ..errors import ApiError

Op = Literal["completion", "chat", "embedding", "rerank"]
Kind = Literal["sgp", "openai-completions", "openai-chat", "openai-embeddings",
               "cohere-generate", "cohere-embed", "cohere-rerank"]

#: Which backend kinds can answer each operation.
COMPATIBLE: dict[str, frozenset[str]] = {
    "completion": frozenset({"sgp", "openai-completions", "openai-chat", "cohere-generate"}),
    "chat": frozenset({"sgp", "openai-completions", "openai-chat", "cohere-generate"}),
    "embedding": frozenset({"sgp", "openai-embeddings", "cohere-embed"}),
    "rerank": frozenset({"sgp", "cohere-rerank"}),
}

_ROUTE_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("/chat/completions", "openai-chat"), ("/completions", "openai-completions"),
    ("/embeddings", "openai-embeddings"), ("/generate", "cohere-generate"), ("/embed", "cohere-embed"),
    ("/rerank", "cohere-rerank"),
)
_TYPE_KINDS = {
    "VLLM": {"CHAT_COMPLETION": "openai-chat", "EMBEDDING": "openai-embeddings", "RERANKING": "cohere-rerank"},
    "COHERE": {"EMBEDDING": "cohere-embed", "RERANKING": "cohere-rerank"},
}
_DEFAULT_KIND = {"VLLM": "openai-completions", "COHERE": "cohere-generate"}
_OP_NOUN = {"completion": "completions", "chat": "chat completions", "embedding": "embeddings",
            "rerank": "rerankings"}
_KIND_NOUN = {"openai-completions": "OpenAI completions", "openai-chat": "OpenAI chat completions",
              "openai-embeddings": "OpenAI embeddings", "cohere-generate": "Cohere generate",
              "cohere-embed": "Cohere embed", "cohere-rerank": "Cohere rerank", "sgp": "SGP"}

#: Sampling parameters carried across protocols, by their SGP v4 names.
_NUMBER_PARAMS = ("temperature", "top_p", "top_k", "frequency_penalty", "presence_penalty")


@dataclass
class Call:
    """One inference call, independent of the API version it arrived on."""

    op: Op
    stream: bool = False
    prompt: str = ""
    #: Chat messages, OpenAI style (``role``, ``content``), the last one included.
    messages: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    query: str = ""
    chunks: list[str] = field(default_factory=list)
    #: SGP v4 names: max_tokens, temperature, top_p, top_k, stop_sequences, ...
    params: dict[str, Any] = field(default_factory=dict)
    #: Validated ``model_request_parameters.bindings``.
    bindings: dict[str, Any] = field(default_factory=dict)
    #: The body as the client sent it, forwarded verbatim when the backend
    #: speaks the same shape (keeps fields this service does not know).
    source_kind: Optional[str] = None
    source_body: Optional[dict[str, Any]] = None
    #: What v5 responses report as ``model`` (what the caller asked for).
    model_label: str = ""


@dataclass
class Result:
    texts: list[str] = field(default_factory=list)
    finish_reason: Optional[str] = None
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    embeddings: list[Any] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Delta:
    text: str = ""
    finish_reason: Optional[str] = None
    raw: Optional[dict[str, Any]] = None


class BadBackendBody(ValueError):
    """The backend answered JSON that is not the shape its protocol promises."""


# --- field checks (422 naming the field) ------------------------------------


def _need(body: dict[str, Any], key: str, kind: type, what: str) -> Any:
    if key not in body or body[key] is None:
        raise ApiError(422, f"invalid request: {key}: field required")
    value = body[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ApiError(422, f"invalid request: {key}: must be {what}")
    return value


def _str_list(body: dict[str, Any], key: str) -> list[str]:
    value = _need(body, key, list, "a list of strings")
    if not all(isinstance(v, str) for v in value):
        raise ApiError(422, f"invalid request: {key}: must be a list of strings")
    return value


def _stream_flag(body: dict[str, Any]) -> bool:
    value = body.get("stream", False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(422, "invalid request: stream: must be a boolean")
    return value


def _params(body: dict[str, Any], stop_key: str, max_keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in max_keys:
        value = body.get(key)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ApiError(422, f"invalid request: {key}: must be a non-negative integer")
            out["max_tokens"] = value
            break
    for key in _NUMBER_PARAMS:
        value = body.get(key)
        if value is not None:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ApiError(422, f"invalid request: {key}: must be a number")
            out[key] = value
    stop = body.get(stop_key)
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise ApiError(422, f"invalid request: {stop_key}: must be a string or a list of strings")
        out["stop_sequences"] = stop
    return out


def validate_bindings(model: Model, value: Any) -> dict[str, Any]:
    """``model_request_parameters`` checked against the template's request schema.

    Types follow the template schema (``str``, ``int``, ``float`` — which takes
    integers too — and ``bool``); unknown names and missing required ones are
    errors.  Each message names the offending field.
    """
    schema = model.template.spec.model_request_parameters_schema if model.template else None
    fields = {f.name: f for f in (schema.parameters if schema else [])}
    if value is None:
        bindings: dict[str, Any] = {}
    else:
        if not isinstance(value, dict) or not isinstance(value.get("bindings", {}), dict):
            raise ApiError(422, "invalid request: model_request_parameters: must be {\"bindings\": {name: value}}")
        bindings = dict(value.get("bindings") or {})
    base = "model_request_parameters.bindings"
    for name, val in bindings.items():
        spec = fields.get(name)
        if spec is None:
            known = ", ".join(sorted(fields)) or "none"
            raise ApiError(422, f"invalid request: {base}.{name}: model '{model.name}' takes no such request "
                                f"parameter (known: {known})")
        ok = {"str": isinstance(val, str), "bool": isinstance(val, bool),
              "int": isinstance(val, int) and not isinstance(val, bool),
              "float": isinstance(val, (int, float)) and not isinstance(val, bool)}[spec.type]
        if not ok:
            raise ApiError(422, f"invalid request: {base}.{name}: must be of type {spec.type}")
    for name, spec in fields.items():
        if spec.required and name not in bindings:
            raise ApiError(422, f"invalid request: {base}.{name}: required by template "
                                f"'{model.template.name if model.template else ''}'")
    return bindings


# --- client bodies → Call ---------------------------------------------------------


def parse_v4(op: Op, body: dict[str, Any], model: Model) -> Call:
    """A v4 ``/v4/models/{id}/<op>`` body (as ``scale-gp`` sends it)."""
    call = Call(op=op, source_kind="sgp", source_body=body, model_label=model.name)
    call.bindings = validate_bindings(model, body.get("model_request_parameters"))
    if op in ("completion", "chat"):
        call.stream = _stream_flag(body)
        call.prompt = _need(body, "prompt", str, "a string")
        call.params = _params(body, "stop_sequences", ("max_tokens",))
        if op == "chat":
            history = _need(body, "chat_history", list, "a list of messages")
            for n, m in enumerate(history):
                if not isinstance(m, dict) or "content" not in m:
                    raise ApiError(422, f"invalid request: chat_history.{n}: must be a message with role and content")
            call.messages = [{"role": m.get("role") or "user", "content": m["content"]} for m in history]
            call.messages.append({"role": "user", "content": call.prompt})
        else:
            call.messages = [{"role": "user", "content": call.prompt}]
    elif op == "embedding":
        call.texts = _str_list(body, "texts")
    else:
        call.query = _need(body, "query", str, "a string")
        call.chunks = _str_list(body, "chunks")
    return call


def parse_v5_chat(body: dict[str, Any], label: str) -> Call:
    """A ``/v5/chat/completions`` body (OpenAI chat, as ``scale-gp-beta`` sends it)."""
    messages = _need(body, "messages", list, "a list of messages")
    if not messages:
        raise ApiError(422, "invalid request: messages: must not be empty")
    for n, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(422, f"invalid request: messages.{n}: must be an object with a role")
    call = Call(op="chat", stream=_stream_flag(body), messages=list(messages), source_kind="openai-chat",
                source_body=body, model_label=label)
    call.params = _params(body, "stop", ("max_completion_tokens", "max_tokens"))
    call.prompt = content_text(messages[-1].get("content"))
    return call


def parse_v5_completion(body: dict[str, Any], label: str) -> Call:
    """A ``/v5/completions`` body (OpenAI completions)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(422, "invalid request: prompt: must be a string (or a list of one string)")
    call = Call(op="completion", stream=_stream_flag(body), prompt=prompt,
                messages=[{"role": "user", "content": prompt}], source_kind="openai-completions",
                source_body=body, model_label=label)
    call.params = _params(body, "stop", ("max_tokens",))
    return call


def content_text(content: Any) -> str:
    """The text of a message's ``content`` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def flatten_messages(messages: list[dict[str, Any]]) -> str:
    """Chat messages as one prompt, for backends that only complete text.

    A single message is its own text; a conversation becomes ``role: text``
    lines followed by ``assistant:``.
    """
    if len(messages) == 1:
        return content_text(messages[0].get("content"))
    lines = [f"{m.get('role', 'user')}: {content_text(m.get('content'))}" for m in messages]
    return "\n".join(lines) + "\nassistant:"


# --- Call → backend request ----------------------------------------------------------


def backend_kind(model: Model, op: Op, route: str) -> str:
    """The shape ``route`` of ``model`` speaks; a 400 if it cannot answer ``op``."""
    protocol = model.endpoint_protocol.upper()
    if protocol == "SGP":
        kind = "sgp"
    else:
        kind = next((k for suffix, k in _ROUTE_SUFFIXES if route.rstrip("/").endswith(suffix)), "")
        if not kind:
            kind = _TYPE_KINDS.get(protocol, {}).get(model.model_type.upper(), _DEFAULT_KIND.get(protocol, "sgp"))
    if kind not in COMPATIBLE[op]:
        raise ApiError(400, f"model '{model.name}' serves {_KIND_NOUN[kind]} ({protocol} {route}); "
                            f"it cannot answer {_OP_NOUN[op]}")
    return kind


def served_model_name(model: Model) -> str:
    """The ``model`` an OpenAI-compatible backend expects.

    vLLM only answers for the name it serves; a v4 model passes it as the
    ``served_model_name`` creation parameter, otherwise the model's name is used.
    """
    if model.api_version == "v4":
        name = model.spec.model_creation_parameters.get("served_model_name")  # type: ignore[union-attr]
        if isinstance(name, str) and name:
            return name
    return model.name


def backend_request(call: Call, kind: str, model: Model) -> dict[str, Any]:
    """The JSON body to send to a backend route of ``kind``."""
    p = call.params
    if kind == "sgp":
        if call.source_kind == "sgp" and call.source_body is not None:
            return call.source_body
        out: dict[str, Any] = {"prompt": call.prompt, **p}
        if call.op == "chat":
            out["chat_history"] = call.messages[:-1]
        if call.stream:
            out["stream"] = True
        return out
    if kind.startswith("openai-"):
        body: dict[str, Any]
        if call.source_kind == kind and call.source_body is not None:
            body = dict(call.source_body)
        elif kind == "openai-chat":
            body = {"messages": call.messages}
        elif kind == "openai-completions":
            body = {"prompt": call.prompt if call.op == "completion" else flatten_messages(call.messages)}
        else:
            body = {"input": call.texts}
        if kind != "openai-embeddings" and call.source_kind != kind:
            body.update({k: v for k, v in p.items() if k != "stop_sequences"})
            if "stop_sequences" in p:
                body["stop"] = p["stop_sequences"]
            if call.stream:
                body["stream"] = True
        for k, v in call.bindings.items():
            body.setdefault(k, v)
        body["model"] = served_model_name(model)
        return body
    if kind == "cohere-generate":
        body = {"prompt": call.prompt if call.op == "completion" else flatten_messages(call.messages)}
        renames = {"max_tokens": "max_tokens", "temperature": "temperature", "top_p": "p", "top_k": "k",
                   "frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty",
                   "stop_sequences": "stop_sequences"}
        body.update({renames[k]: v for k, v in p.items() if k in renames})
        if call.stream:
            body["stream"] = True
    elif kind == "cohere-embed":
        body = {"texts": call.texts, "input_type": "search_document"}
    else:
        body = {"query": call.query, "documents": call.chunks, "top_n": len(call.chunks)}
    for k, v in call.bindings.items():
        body.setdefault(k, v)
    return body


# --- backend response → Result -----------------------------------------------------


def _finish(reason: Any) -> Optional[str]:
    if reason is None:
        return None
    text = str(reason).lower()
    return {"complete": "stop", "max_tokens": "length", "end_turn": "stop"}.get(text, text)


def _int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_result(kind: str, op: Op, body: Any) -> Result:
    """A backend's JSON answer; :class:`BadBackendBody` if it has the wrong shape."""
    if not isinstance(body, dict):
        raise BadBackendBody("the body is not a JSON object")
    try:
        if kind == "sgp":
            return _sgp_result(op, body)
        if kind in ("openai-completions", "openai-chat"):
            choices = sorted(body["choices"], key=lambda c: c.get("index", 0))
            if kind == "openai-chat":
                texts = [content_text((c.get("message") or {}).get("content")) for c in choices]
            else:
                texts = [str(c.get("text", "")) for c in choices]
            usage = body.get("usage") or {}
            return Result(texts=texts, finish_reason=_finish(choices[0].get("finish_reason")) if choices else None,
                          prompt_tokens=_int(usage.get("prompt_tokens")),
                          completion_tokens=_int(usage.get("completion_tokens")), raw=body)
        if kind == "openai-embeddings":
            data = sorted(body["data"], key=lambda d: d.get("index", 0))
            return Result(embeddings=[list(d["embedding"]) for d in data],
                          prompt_tokens=_int((body.get("usage") or {}).get("prompt_tokens")), raw=body)
        if kind == "cohere-generate":
            gens = body["generations"]
            billed = (body.get("meta") or {}).get("billed_units") or {}
            return Result(texts=[str(g.get("text", "")) for g in gens],
                          finish_reason=_finish(gens[0].get("finish_reason")) if gens else None,
                          prompt_tokens=_int(billed.get("input_tokens")),
                          completion_tokens=_int(billed.get("output_tokens")), raw=body)
        if kind == "cohere-embed":
            emb = body["embeddings"]
            if isinstance(emb, dict):  # embedding_types answers: {"float": [...]}
                emb = emb.get("float") or next(iter(emb.values()))
            return Result(embeddings=[list(e) for e in emb], raw=body)
        if kind == "cohere-rerank":
            results = body["results"]
            n = max((int(r["index"]) for r in results), default=-1) + 1
            scores = [0.0] * n
            for r in results:
                scores[int(r["index"])] = float(r["relevance_score"])
            return Result(scores=scores, raw=body)
    except (KeyError, TypeError, ValueError, AttributeError, StopIteration, IndexError) as exc:
        raise BadBackendBody(f"not a {_KIND_NOUN[kind]} answer ({type(exc).__name__}: {exc})") from None
    raise BadBackendBody(f"unknown kind {kind}")


def _sgp_result(op: Op, body: dict[str, Any]) -> Result:
    if op in ("completion", "chat"):
        completions = body["completions"]
        texts = [str(t) for t in completions[0][1]] if completions else []
        return Result(texts=texts, finish_reason=body.get("finish_reason"),
                      prompt_tokens=_int(body.get("prompt_tokens")),
                      completion_tokens=_int(body.get("response_tokens")), raw=body)
    if op == "embedding":
        return Result(embeddings=list(body["embeddings"]), prompt_tokens=_int(body.get("tokens_used")), raw=body)
    return Result(scores=[float(s) for s in body["chunk_scores"]], prompt_tokens=_int(body.get("tokens_used")),
                  raw=body)


def parse_delta(kind: str, data: Any) -> Optional[Delta]:
    """One streamed event's JSON as a :class:`Delta`; ``None`` for events to skip."""
    if not isinstance(data, dict):
        raise BadBackendBody("a stream event is not a JSON object")
    try:
        if kind == "sgp":
            completions = data.get("completions") or []
            text = "".join(str(t) for t in completions[0][1]) if completions else ""
            return Delta(text, data.get("finish_reason"), data)
        if kind in ("openai-chat", "openai-completions"):
            choices = data.get("choices") or []
            if not choices:
                return Delta("", None, data)  # e.g. a usage-only chunk
            c = choices[0]
            text = content_text((c.get("delta") or {}).get("content")) if kind == "openai-chat" else str(
                c.get("text") or "")
            return Delta(text, _finish(c.get("finish_reason")), data)
        if kind == "cohere-generate":
            event = data.get("event_type")
            if event == "text-generation":
                return Delta(str(data.get("text", "")), None, data)
            if event == "stream-end" or data.get("is_finished"):
                return Delta("", _finish(data.get("finish_reason")) or "stop", data)
            return None
    except (TypeError, IndexError, AttributeError, KeyError) as exc:
        raise BadBackendBody(f"not a {_KIND_NOUN[kind]} stream event ({type(exc).__name__})") from None
    raise BadBackendBody(f"{_KIND_NOUN[kind]} does not stream")


# --- Result → client bodies ------------------------------------------------------------


def render_v4(call: Call, kind: str, result: Result) -> dict[str, Any]:
    """The ``scale-gp`` response body (``CompletionResponse``, ``EmbeddingResponse``, ``RerankingResponse``)."""
    if kind == "sgp":
        return result.raw
    if call.op in ("completion", "chat"):
        out: dict[str, Any] = {"completions": [[call.prompt, result.texts]],
                               "finish_reason": result.finish_reason or "stop"}
        if result.prompt_tokens is not None:
            out["prompt_tokens"] = result.prompt_tokens
        if result.completion_tokens is not None:
            out["response_tokens"] = result.completion_tokens
        return out
    if call.op == "embedding":
        return {"embeddings": result.embeddings, "tokens_used": result.prompt_tokens}
    scores = result.scores + [0.0] * (len(call.chunks) - len(result.scores))
    return {"chunk_scores": scores[: len(call.chunks)], "tokens_used": result.prompt_tokens}


def render_v4_chunk(call: Call, kind: str, delta: Delta) -> dict[str, Any]:
    if kind == "sgp" and delta.raw is not None:
        return delta.raw
    return {"completions": [[call.prompt, [delta.text]]], "finish_reason": delta.finish_reason}


def response_id(prefix: str, call: Call) -> str:
    """A deterministic id for an answer built here (no backend id to reuse)."""
    digest = hashlib.sha256(repr((call.model_label, call.prompt, call.messages)).encode()).hexdigest()[:24]
    return f"{prefix}-{digest}"


def _usage(result: Result) -> Optional[dict[str, int]]:
    if result.prompt_tokens is None and result.completion_tokens is None:
        return None
    p, c = result.prompt_tokens or 0, result.completion_tokens or 0
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def render_v5(call: Call, kind: str, result: Result, created: int) -> dict[str, Any]:
    """A ``ChatCompletion`` or ``Completion`` for the v5 routes."""
    if kind == call.source_kind:  # same OpenAI shape: the backend's answer, under our model name
        return {**result.raw, "model": call.model_label}
    finish = result.finish_reason or "stop"
    if call.op == "chat":
        out: dict[str, Any] = {
            "id": response_id("chatcmpl", call), "object": "chat.completion", "created": created,
            "model": call.model_label,
            "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": finish}
                        for i, t in enumerate(result.texts)]}
    else:
        out = {"id": response_id("cmpl", call), "object": "text_completion", "created": created,
               "model": call.model_label,
               "choices": [{"index": i, "text": t, "finish_reason": finish, "logprobs": None}
                           for i, t in enumerate(result.texts)]}
    usage = _usage(result)
    if usage:
        out["usage"] = usage
    return out


def render_v5_chunk(call: Call, kind: str, delta: Delta, created: int) -> dict[str, Any]:
    if kind == call.source_kind and delta.raw is not None:
        return {**delta.raw, "model": call.model_label}
    if call.op == "chat":
        return {"id": response_id("chatcmpl", call), "object": "chat.completion.chunk", "created": created,
                "model": call.model_label,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": delta.text},
                             "finish_reason": delta.finish_reason}]}
    return {"id": response_id("cmpl", call), "object": "text_completion", "created": created,
            "model": call.model_label,
            "choices": [{"index": 0, "text": delta.text, "finish_reason": delta.finish_reason, "logprobs": None}]}
