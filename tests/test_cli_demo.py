"""``python -m sgp_infra demo``: the README's main job, end to end on loopback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from catalog_fixtures import ROOT

from sgp_infra.catalog import load_file
from sgp_infra.cli.demo import PROMPT, backend_groups, example_value
from sgp_infra.demo_model import DemoModel


def test_demo_runs_the_whole_flow_on_the_dev_stack(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SGP_INFRA_API_KEYS"}
    proc = subprocess.run([sys.executable, "-m", "sgp_infra", "demo", "--stack", "dev", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "catalogue valid" in out
    assert any(p.name.endswith("deployment-echo.yaml") for p in tmp_path.iterdir())
    assert "v4 GET /v4/models: ['echo', 't4-embedder', 'transcriber']" in out
    # the echo went through the API to a real model server and back
    assert "echo: v4 completions -> [['hello from sgp-infra', ['echo: hello from sgp-infra']]]" in out
    assert "t4-embedder: v5 inference ->" in out and "hello from sgp-infra" in out.split("t4-embedder: v5")[1]
    # the ASYNC model: a task queued on the local nats-server, run by its forwarder, polled to SUCCESS
    line = next(text for text in out.splitlines() if text.startswith("transcriber: async task -> POST"))
    assert "POST /v1/async-tasks -> task" in line and "SUCCESS" in line and "hello from sgp-infra" in line
    # the README shows this run's output: every line, in order (ports, the task id and "..." vary)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = readme.split("<!-- demo output:", 1)[1].split("```", 2)[1].strip("\n").splitlines()
    printed = out.strip("\n").splitlines()
    # render's line goes to stderr; the README's count must be this run's
    wrote = next(i for i, text in enumerate(shown) if re.fullmatch(r"wrote \d+ manifests to rendered/dev", text))
    assert shown.pop(wrote) in proc.stderr.replace(str(tmp_path), "rendered/dev")
    assert len(printed) == len(shown), printed
    for want, got in zip(shown, printed, strict=True):
        pattern = re.escape(want).replace("PORT", r"\d+").replace(r"\.\.\.", ".*")
        pattern = re.sub("[0-9a-f]{8}…", "[0-9a-f]{8}…", pattern)
        assert re.fullmatch(pattern, got), (want, got)


def test_demo_invalid_catalogue_exits_1_and_starts_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text("config:\n  sgp-infra:accountId: a\n  sgp-infra:models: {m: {model_type: COMPLETION}}\n")
    proc = subprocess.run([sys.executable, "-m", "sgp_infra", "demo", "--config-file", str(bad),
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "sgp-infra:models.m.model_template_id" in proc.stderr
    assert "start" not in proc.stdout and not (tmp_path / "out").exists()


# --- every model of a realistic catalogue, called the way its type is called ---------------

PROD = ROOT / "stacks" / "Pulumi.prod.yaml"


def test_prod_stack_covers_every_way_a_model_is_called() -> None:
    """The prod stack is the demo's coverage: each call kind of ``demo.call`` has a model there."""
    catalog = load_file(PROD)
    kinds = {(m.api_version, m.model_type.upper(), m.streaming) for m in catalog.models.values()}
    for version, kind in [("v4", "COMPLETION"), ("v4", "CHAT_COMPLETION"), ("v4", "EMBEDDING"),
                          ("v4", "RERANKING"), ("v4", "GENERIC"), ("v5", "COMPLETION"),
                          ("v5", "CHAT_COMPLETION"), ("v5", "GENERIC")]:
        assert any(k[:2] == (version, kind) for k in kinds), (version, kind)
    assert any(k[2] for k in kinds if k[0] == "v4") and any(k[2] for k in kinds if k[0] == "v5")
    assert {m.endpoint_protocol for m in catalog.models.values()} == {"SGP", "VLLM", "COHERE"}


def test_demo_answers_every_model_of_the_prod_stack(tmp_path: Path) -> None:
    catalog = load_file(PROD)
    env = {k: v for k, v in os.environ.items() if k != "SGP_INFRA_API_KEYS"}
    proc = subprocess.run([sys.executable, "-m", "sgp_infra", "demo", "--config-file", str(PROD),
                           "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # one echo server per protocol, not one per model
    assert "start 3 demo model server(s) for 11 model(s)" in proc.stdout
    calls = proc.stdout.split("==> call it with the official clients", 1)[1]
    answers: dict[str, str] = {}
    for line in calls.splitlines():
        match = re.fullmatch(r"(\S+): (v[45] \S+(?: \(stream\))?) -> (.+)", line)
        if match:
            assert match.group(1) not in answers, f"two answers for {match.group(1)}"
            answers[match.group(1)] = f"{match.group(2)} -> {match.group(3)}"
    assert sorted(answers) == sorted(catalog.models)
    for name, model in catalog.models.items():
        assert answers[name].startswith(EXPECTED_CALL[(model.api_version, model.model_type.upper())]), answers[name]
        assert ("(stream)" in answers[name]) == model.streaming, answers[name]
        if model.model_type.upper() in ("COMPLETION", "CHAT_COMPLETION"):
            assert "hello from sgp-infra" in answers[name]  # the echo came back through the API
    assert answers["bge-reranker-large"] == "v4 rerankings -> [1.0, 0.0]"
    assert answers["e5-large-embed"] == "v4 embeddings -> 1 vector(s) of 8"


EXPECTED_CALL = {
    ("v4", "COMPLETION"): "v4 completions", ("v4", "CHAT_COMPLETION"): "v4 chat-completions",
    ("v4", "EMBEDDING"): "v4 embeddings", ("v4", "RERANKING"): "v4 rerankings", ("v4", "GENERIC"): "v4 execute",
    ("v5", "COMPLETION"): "v5 completions", ("v5", "CHAT_COMPLETION"): "v5 chat/completions",
    ("v5", "GENERIC"): "v5 inference",
}


@pytest.mark.parametrize("schema, value", [
    ({}, {"prompt": PROMPT}),
    ({"type": "object", "properties": {"query": {"type": "string"}, "documents": {"type": "array",
      "items": {"type": "string"}}, "top_n": {"type": "integer"}}, "required": ["query", "documents"]},
     {"query": PROMPT, "documents": [PROMPT]}),
    ({"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}, "mode": {"enum": ["a", "b"]},
                                       "x": {"type": ["null", "number"]}, "flag": {"type": "boolean"}}},
     {"n": 3, "mode": "a", "x": 1.0, "flag": False}),
])
def test_example_args_satisfy_the_request_schema(schema: dict, value: object) -> None:
    assert example_value(schema) == value
    jsonschema.validate(value, schema)


def test_one_demo_server_per_protocol_answers_each_models_routes() -> None:
    catalog = load_file(PROD)
    groups = {g.protocol: g for g in backend_groups(catalog)}
    assert sorted(groups) == ["COHERE", "SGP", "VLLM"]
    sgp = groups["SGP"].args(5005)
    # qwen-72b-chat (v5, so SGP-shaped bodies) predicts and streams on /v1/chat/completions; bge-reranker on /rerank
    assert "/v1/chat/completions" in sgp[sgp.index("--predict-route") + 1::2]
    assert ["--predict-route", "/rerank"] == sgp[sgp.index("/rerank") - 1:sgp.index("/rerank") + 1]


def test_demo_model_routes_by_suffix_and_stream_flag() -> None:
    vllm = DemoModel("VLLM")
    assert vllm.handler("/v2/chat/completions") == vllm.openai_chat
    assert vllm.handler("/openai/v1/completions/") == vllm.openai_completions
    assert vllm.handler("/predict") is None
    sgp = DemoModel("SGP", predict_routes=["/chat"], streaming_routes=["/chat"])
    assert sgp.handler("/chat") == sgp.sgp_either and sgp.handler("/v1/chat/completions") is None
    assert sgp.sgp_either({"prompt": "a"})["completions"] == [["a", ["a"]]]
    assert b"".join(sgp.sgp_either({"prompt": "a b", "stream": True}).chunks).count(b"data: ") == 2


def test_demo_on_a_taken_port_stops_before_starting_anything(tmp_path: Path) -> None:
    """Whatever listens on --port might answer /readyz and be taken for the API; the demo refuses instead."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "sgp_infra", "demo", "--stack", "dev", "--port", str(port),
                               "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in proc.stderr
    assert "echo server" not in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", [["demo", "--stack", "dev"], ["serve", "--stack", "dev"], ["demo-model"],
                                     ["forwarder", "--stack", "dev", "--model", "transcriber", "--backend", "http://x"]])
def test_a_port_out_of_range_is_a_usage_error(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from sgp_infra.cli import main

    with pytest.raises(SystemExit) as info:
        main([*command, "--port", "99999"])
    assert info.value.code == 2
    assert "expected a port number from 0 (a free one) to 65535, got '99999'" in capsys.readouterr().err


def test_a_refused_listing_is_reported_and_counted_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from sgp_infra.cli.demo import exercise

    class Refused(Exception):
        pass

    def refuse(**_: object) -> None:
        raise Refused("Error code: 404 - no route GET /v4/models")

    client = SimpleNamespace(models=SimpleNamespace(list=refuse))
    catalog = load_file(ROOT / "stacks" / "Pulumi.dev.yaml")
    assert exercise(catalog, client, client, (Refused,)) == len(catalog.models)
    assert "error: listing the models failed: Error code: 404" in capsys.readouterr().err
