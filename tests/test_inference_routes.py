"""Every inference route × protocol over loopback, against real demo-model backends,
plus the official clients (v4 ``scale-gp``, v5 ``scale-gp-beta``) end to end."""

from __future__ import annotations

from typing import Any, Iterator

import httpx
import pytest
import scale_gp
import scale_gp_beta

from sgp_infra.demo_model import embed, overlap_score
from test_inference_helpers import HEADERS, KEY, backend_map, demo_backends, make_app, make_catalog, serve

CATALOG = make_catalog()
GREETING = "echo: "


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with demo_backends(greeting=GREETING) as urls:
        app = make_app(CATALOG, backend_map(CATALOG, urls))
        with serve(app) as url:
            yield url


@pytest.fixture()
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers=HEADERS, timeout=30) as client:
        yield client


GENERATORS = ["sgp-echo", "sgp-chat", "vllm-chat", "vllm-cmpl", "cohere-gen"]
EMBEDDERS = ["sgp-embed", "vllm-embed", "cohere-embed"]
RERANKERS = ["sgp-rerank", "cohere-rerank"]


# --- v4 routes × protocols ---------------------------------------------------------


@pytest.mark.parametrize("model", GENERATORS)
def test_v4_completion_every_protocol(http: httpx.Client, model: str) -> None:
    r = http.post(f"/v4/models/{model}/completions", json={"prompt": "hello there", "max_tokens": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["completions"] == [["hello there", [GREETING + "hello there"]]]
    assert body["finish_reason"] == "stop"


@pytest.mark.parametrize("model", GENERATORS)
def test_v4_chat_every_protocol(http: httpx.Client, model: str) -> None:
    r = http.post(f"/v4/models/{model}/chat-completions", json={"prompt": "how are you", "chat_history": []})
    assert r.status_code == 200, r.text
    assert r.json()["completions"][0][1] == [GREETING + "how are you"]


@pytest.mark.parametrize("model", ["sgp-echo", "vllm-chat", "vllm-cmpl", "cohere-gen"])
def test_v4_streaming_every_protocol(http: httpx.Client, model: str) -> None:
    with http.stream("POST", f"/v4/models/{model}/completions", json={"prompt": "one two three", "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    assert "[DONE]" not in text  # the SGP clients would try to parse it as JSON
    pieces = [httpx.Response(200, content=line[6:]).json() for line in text.split("\n\n") if line.startswith("data: ")]
    assert "".join(p["completions"][0][1][0] for p in pieces) == GREETING + "one two three"
    assert pieces[-1]["finish_reason"] == "stop"


@pytest.mark.parametrize("model", EMBEDDERS)
def test_v4_embeddings_every_protocol(http: httpx.Client, model: str) -> None:
    r = http.post(f"/v4/models/{model}/embeddings", json={"texts": ["alpha", "beta"]})
    assert r.status_code == 200, r.text
    assert r.json()["embeddings"] == [embed("alpha"), embed("beta")]


@pytest.mark.parametrize("model", RERANKERS)
def test_v4_rerankings_every_protocol(http: httpx.Client, model: str) -> None:
    chunks = ["red fox", "blue whale", "red whale"]
    r = http.post(f"/v4/models/{model}/rerankings", json={"query": "red whale", "chunks": chunks})
    assert r.status_code == 200, r.text
    assert r.json()["chunk_scores"] == [overlap_score("red whale", c) for c in chunks]


def test_model_by_id_and_deployment_id(http: httpx.Client) -> None:
    model = CATALOG.models["sgp-echo"]
    deployments = http.get(f"/v4/models/{model.id}/deployments").json()["items"]
    for ref in (model.id, deployments[0]["id"]):
        r = http.post(f"/v4/models/{ref}/completions", json={"prompt": "x"})
        assert r.status_code == 200, r.text


def test_execute_passes_the_body_through(http: httpx.Client) -> None:
    model = CATALOG.models["sgp-echo"]
    dep = http.get(f"/v4/models/{model.id}/deployments").json()["items"][0]["id"]
    r = http.post(f"/v4/models/{model.id}/deployments/{dep}/execute", json={"prompt": "raw"})
    assert r.json()["completions"] == [["raw", [GREETING + "raw"]]]
    r = http.post(f"/v4/models/{model.id}/deployments/nope/execute", json={})
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_execute_stream_is_raw_sse(http: httpx.Client) -> None:
    model = CATALOG.models["vllm-chat"]
    dep = http.get(f"/v4/models/{model.id}/deployments").json()["items"][0]["id"]
    body = {"stream": True, "messages": [{"role": "user", "content": "a b"}]}
    with http.stream("POST", f"/v4/models/{model.name}/deployments/{dep}/execute", json=body) as r:
        text = r.read().decode()
    assert text.endswith("data: [DONE]\n\n")  # untouched: execute is the model's own protocol


# --- request validation ----------------------------------------------------------------------


@pytest.mark.parametrize("body, field", [
    ({"prompt": "x", "model_request_parameters": {"bindings": {"temperature": "hot"}}},
     "model_request_parameters.bindings.temperature"),
    ({"prompt": "x", "model_request_parameters": {"bindings": {"nope": 1}}}, "model_request_parameters.bindings.nope"),
    ({"prompt": "x", "model_request_parameters": {"bindings": {"max_new_tokens": 1.5}}},
     "model_request_parameters.bindings.max_new_tokens"),
    ({}, "prompt"),
    ({"prompt": 3}, "prompt"),
    ({"prompt": "x", "stream": "yes"}, "stream"),
    ({"prompt": "x", "max_tokens": -1}, "max_tokens"),
])
def test_v4_bad_requests_are_422_naming_the_field(http: httpx.Client, body: dict[str, Any], field: str) -> None:
    r = http.post("/v4/models/sgp-echo/completions", json=body)
    assert r.status_code == 422
    assert r.json()["error"] == "unprocessable_entity"
    assert f"invalid request: {field}:" in r.json()["detail"]


def test_valid_request_parameters_are_accepted(http: httpx.Client) -> None:
    r = http.post("/v4/models/sgp-echo/completions", json={
        "prompt": "x", "model_request_parameters": {"bindings": {"temperature": 1, "max_new_tokens": 3}}})
    assert r.status_code == 200


def test_operation_the_protocol_cannot_answer_is_400(http: httpx.Client) -> None:
    r = http.post("/v4/models/vllm-chat/embeddings", json={"texts": ["a"]})
    assert r.status_code == 400 and "cannot answer embeddings" in r.json()["detail"]
    r = http.post("/v4/models/vllm-embed/rerankings", json={"query": "a", "chunks": ["a"]})
    assert r.status_code == 400


def test_body_shape_errors(http: httpx.Client) -> None:
    r = http.post("/v4/models/sgp-echo/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    r = http.post("/v4/models/sgp-echo/completions", json=[1, 2])
    assert r.status_code == 422
    r = http.post("/v4/models/missing/completions", json={"prompt": "x"})
    assert r.status_code == 404
    r = http.post("/v4/models/sgp-echo/completions", json={"prompt": "x"}, headers={"x-api-key": "wrong"})
    assert r.status_code == 401


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    big = b'{"prompt": "' + b"x" * (17 * 1024 * 1024) + b'"}'
    r = http.post("/v4/models/sgp-echo/completions", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_v5_model_references(http: httpx.Client) -> None:
    model = CATALOG.models["vllm-chat"]
    for ref in ("launch/vllm-chat", "vllm-chat", model.id):
        r = http.post("/v5/chat/completions", json={"model": ref, "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == ref
    r = http.post("/v5/chat/completions",
                  json={"model": "openai/gpt-5", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404
    r = http.post("/v5/chat/completions", json={"messages": []})
    assert r.status_code == 422 and "model" in r.json()["detail"]


def test_v5_inference_validates_args_against_the_request_schema(http: httpx.Client) -> None:
    r = http.post("/v5/inference", json={"model": "launch/v5-generic", "args": {"prompt": 3}})
    assert r.status_code == 422 and "prompt" in r.json()["detail"]
    r = http.post("/v5/inference", json={"model": "launch/v5-generic", "args": {"prompt": "p"},
                                         "inference_configuration": {"num_retries": -1}})
    assert r.status_code == 422 and "num_retries" in r.json()["detail"]


# --- official clients ---------------------------------------------------------------------------


@pytest.fixture()
def v4(base_url: str) -> Iterator[scale_gp.SGPClient]:
    client = scale_gp.SGPClient(api_key=KEY, base_url=base_url, _strict_response_validation=True, max_retries=0)
    yield client
    client.close()


@pytest.fixture()
def v5(base_url: str) -> Iterator[scale_gp_beta.SGPClient]:
    client = scale_gp_beta.SGPClient(api_key=KEY, account_id="acme-ml", base_url=base_url,
                                     _strict_response_validation=True, max_retries=0)
    yield client
    client.close()


def test_v4_client_every_operation(v4: scale_gp.SGPClient) -> None:
    out = v4.models.completions.create("sgp-echo", prompt="hi",
                                       model_request_parameters={"bindings": {"temperature": 0.1}})
    assert out.completions == [["hi", [GREETING + "hi"]]]
    chat = v4.models.chat_completions.create("vllm-chat", prompt="yo",
                                             chat_history=[{"role": "system", "content": "be brief"}])
    assert chat.completions[0][1] == [GREETING + "yo"]
    emb = v4.models.embeddings.create("cohere-embed", texts=["a"])
    assert emb.embeddings == [embed("a")]
    rr = v4.models.rerankings.create("cohere-rerank", query="a b", chunks=["a", "z"])
    assert rr.chunk_scores == [0.5, 0.0]
    model = v4.models.retrieve("sgp-echo")
    dep = v4.models.deployments.list(model.id).items[0]
    assert v4.models.deployments.execute(dep.id, model_instance_id=model.id, extra_body={"prompt": "e"}) == {
        "completions": [["e", [GREETING + "e"]]], "finish_reason": "stop", "prompt_tokens": 1, "response_tokens": 2}


def test_v4_client_streams(v4: scale_gp.SGPClient) -> None:
    for model in ("sgp-echo", "vllm-cmpl", "cohere-gen"):
        chunks = list(v4.models.completions.create(model, prompt="a b c", stream=True))
        assert "".join(c.completions[0][1][0] for c in chunks) == GREETING + "a b c"  # type: ignore[index]


def test_v4_client_sees_422(v4: scale_gp.SGPClient) -> None:
    with pytest.raises(scale_gp.UnprocessableEntityError) as info:
        v4.models.completions.create("sgp-echo", prompt="x",
                                     model_request_parameters={"bindings": {"temperature": "x"}})
    assert "temperature" in str(info.value)


@pytest.mark.parametrize("model", ["launch/vllm-chat", "launch/sgp-chat", "launch/cohere-gen", "launch/vllm-cmpl"])
def test_v5_client_chat(v5: scale_gp_beta.SGPClient, model: str) -> None:
    out = v5.chat.completions.create(model=model, messages=[{"role": "user", "content": "hey you"}])
    assert out.choices[0].message.content == GREETING + "hey you"  # type: ignore[union-attr]
    assert out.model == model
    chunks = list(v5.chat.completions.create(model=model, messages=[{"role": "user", "content": "hey you"}],
                                             stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == GREETING + "hey you"  # type: ignore[union-attr]


@pytest.mark.parametrize("model", ["launch/vllm-cmpl", "launch/sgp-echo", "launch/cohere-gen", "launch/vllm-chat"])
def test_v5_client_completions(v5: scale_gp_beta.SGPClient, base_url: str, model: str) -> None:
    out = v5.completions.create(model=model, prompt="abc")
    assert out.choices[0].text == GREETING + "abc"
    # Streamed chunks carry finish_reason null until the last one (as OpenAI's do); the client's
    # Completion type declares it required, so only its default, non-strict mode accepts them.
    lenient = scale_gp_beta.SGPClient(api_key=KEY, account_id="acme-ml", base_url=base_url, max_retries=0)
    chunks = list(lenient.completions.create(model=model, prompt="a b", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == GREETING + "a b"


def test_v5_client_inference_and_models(v5: scale_gp_beta.SGPClient) -> None:
    out = v5.inference.create(model="launch/v5-generic", args={"prompt": "p"},
                              inference_configuration={"timeout_seconds": 30, "num_retries": 1})
    assert out.response == {"completions": [["p", [GREETING + "p"]]], "finish_reason": "stop",
                            "prompt_tokens": 1, "response_tokens": 2}
    models = v5.chat.completions.models()
    names = [m.name for m in models.items]
    assert names == sorted(n for n, m in CATALOG.models.items()
                           if m.model_type in ("COMPLETION", "CHAT_COMPLETION"))
    assert all(m.api_model_vendor == "launch" and m.api_model_availability == "available" for m in models.items)


# --- deeply nested JSON: a 400 on every route, never a 500 -----------------------------------------


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _routes(http: httpx.Client) -> dict[str, tuple[str, str]]:
    """Each inference route → (path, a JSON body template with ``NEST`` where the nesting goes)."""
    model = CATALOG.models["sgp-echo"]
    dep = http.get(f"/v4/models/{model.id}/deployments").json()["items"][0]["id"]
    return {
        "v4 completions": ("/v4/models/sgp-echo/completions", '{"prompt": "x", "extra": NEST}'),
        "v4 chat": ("/v4/models/sgp-chat/chat-completions", '{"prompt": "x", "chat_history": [], "extra": NEST}'),
        "v4 embeddings": ("/v4/models/sgp-embed/embeddings", '{"texts": ["a"], "extra": NEST}'),
        "v4 rerankings": ("/v4/models/sgp-rerank/rerankings", '{"query": "a", "chunks": ["a"], "extra": NEST}'),
        "v4 execute": (f"/v4/models/{model.id}/deployments/{dep}/execute", '{"prompt": "x", "extra": NEST}'),
        "v5 chat": ("/v5/chat/completions",
                    '{"model": "launch/vllm-chat", "messages": [{"role": "user", "content": NEST}]}'),
        "v5 completions": ("/v5/completions", '{"model": "launch/vllm-cmpl", "prompt": "x", "extra": NEST}'),
        "v5 inference": ("/v5/inference", '{"model": "launch/v5-generic", "args": {"prompt": NEST}}'),
    }


@pytest.mark.parametrize("depth", [100, 300, 5000])
def test_deeply_nested_json_is_400_on_every_inference_route(http: httpx.Client, depth: int) -> None:
    """100 parses and re-encodes; 300 parses but is over the JSON encoder's limit; 5000 is over the parser's."""
    for name, (path, template) in _routes(http).items():
        r = http.post(path, content=template.replace("NEST", _nested(depth)),
                      headers={"content-type": "application/json"})
        assert r.status_code == 400, (name, depth, r.text[:300])
        assert r.json()["error"] == "bad_request" and "nested deeper than 64 levels" in r.json()["detail"]


def test_nesting_within_the_limit_is_forwarded(http: httpx.Client) -> None:
    r = http.post("/v4/models/sgp-echo/completions", content=f'{{"prompt": "x", "extra": {_nested(60)}}}',
                  headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


def test_json_depth_check() -> None:
    from sgp_infra.api.inference.routes import decode_body, json_depth_over

    assert not json_depth_over({"a": [[1]]}, 3) and json_depth_over({"a": [[[1]]]}, 3)
    assert not json_depth_over({"a": "[[[[[[[["}, 2)  # brackets in strings do not count
    assert decode_body(b'{"a": "[[[[[[[[[["}', max_depth=2) == {"a": "[[[[[[[[[["}
    assert decode_body(b"") == {}


# --- accounting --------------------------------------------------------------------------------------


def test_calls_are_counted_by_route_template_and_model(http: httpx.Client) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def value(name: str, **labels: str) -> float:
        for family in text_string_to_metric_families(http.get("/metrics").text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return 0.0

    route = "/v4/models/{model_deployment_id}/embeddings"
    api_before = value("sgp_infra_api_requests_total", method="POST", route=route, status="200")
    model_before = value("sgp_infra_model_requests_total", model="sgp-embed", operation="embedding", code="200")
    assert http.post("/v4/models/sgp-embed/embeddings", json={"texts": ["a"]}).status_code == 200
    assert value("sgp_infra_api_requests_total", method="POST", route=route, status="200") == api_before + 1
    assert value("sgp_infra_model_requests_total", model="sgp-embed", operation="embedding",
                 code="200") == model_before + 1
    assert value("sgp_infra_model_upstream_latency_seconds_count", model="sgp-embed") >= 1
    assert value("sgp_infra_model_requests_in_flight", model="sgp-embed") == 0


def test_a_chunked_body_over_the_limit_is_413(base_url: str) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(17):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    with httpx.Client(base_url=base_url, headers=HEADERS, timeout=30) as client:
        r = client.post("/v4/models/sgp-echo/completions", content=body(),
                        headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]


# --- how the routes are served ---------------------------------------------------------

INFERENCE_POSTS = {"/v4/models/{model_deployment_id}/completions", "/v4/models/{model_deployment_id}/chat-completions",
                   "/v4/models/{model_deployment_id}/embeddings", "/v4/models/{model_deployment_id}/rerankings",
                   "/v5/chat/completions", "/v5/completions", "/v5/inference",
                   "/v4/models/{model_instance_id}/deployments/{deployment_id}/execute"}


def test_the_inference_posts_are_plain_routes_matched_first_and_documented_in_full() -> None:
    from fastapi.routing import APIRoute
    from starlette.routing import Route

    app = make_app(CATALOG, {})
    served = [r for r in app.routes if type(r) is Route and r.path in INFERENCE_POSTS]
    assert {r.path for r in served} == INFERENCE_POSTS
    first_other = next(i for i, r in enumerate(app.routes) if not isinstance(r, (Route, APIRoute)))
    assert all(app.routes.index(r) < first_other for r in served)  # before every included router
    doc = app.openapi()
    for path in INFERENCE_POSTS:
        operation = doc["paths"][path]["post"]
        assert operation["security"] == [{"APIKeyHeader": []}], path
        params = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert params == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path


def test_a_plain_route_answers_errors_in_the_api_shape(http: httpx.Client, base_url: str) -> None:
    r = httpx.post(f"{base_url}/v5/completions", json={})
    assert r.status_code == 401 and r.json()["error"]
    r = http.get("/v4/models/sgp-echo/completions")
    assert r.status_code == 405 and r.json()["status"] == 405
    r = http.post("/v4/models/no-such-model/completions", json={"prompt": "x"})
    assert r.status_code == 404 and r.json()["status"] == 404
