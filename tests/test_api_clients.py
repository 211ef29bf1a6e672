"""The API over loopback, driven by the official SGP clients (v4 scale-gp, v5 scale-gp-beta).

Clients run with strict response validation, so every required field of every
response is checked against the clients' own models.
"""

from __future__ import annotations

from typing import Iterator

import httpx
import pytest
import scale_gp
import scale_gp_beta

from sgp_infra.api import create_app
from sgp_infra.api.status import ModelStatus, StaticStatus

from api_helpers import ACME_KEY, API_KEYS, BOTH_KEY, OTHER_KEY, running, make_catalog

CATALOG = make_catalog()
ACME_MODELS = sorted(m.name for m in CATALOG.models.values() if m.account_id == "dev-account")
OTHER_MODELS = sorted(m.name for m in CATALOG.models.values() if m.account_id == "other-account")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    status = StaticStatus(ModelStatus("deploying", "waiting for pods: 0 of 1 available"))
    app = create_app(CATALOG, api_keys=API_KEYS, status_source=status, stack="dev")
    with running(app) as url:
        yield url


#: Clients made by :func:`v4` and :func:`v5`, closed after each test (else their sockets leak).
_clients: list[scale_gp.SGPClient | scale_gp_beta.SGPClient] = []


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def v4(base_url: str, key: str = ACME_KEY, account: str | None = None) -> scale_gp.SGPClient:
    client = scale_gp.SGPClient(api_key=key, base_url=base_url, account_id=account, max_retries=0,
                                _strict_response_validation=True)
    _clients.append(client)
    return client


def v5(base_url: str, key: str = ACME_KEY, account: str = "dev-account") -> scale_gp_beta.SGPClient:
    client = scale_gp_beta.SGPClient(api_key=key, base_url=base_url, account_id=account, max_retries=0,
                                     _strict_response_validation=True)
    _clients.append(client)
    return client


# --- v4 ---------------------------------------------------------------------------


def test_v4_lists_every_page_of_models(base_url: str) -> None:
    client = v4(base_url)
    names = [m.name for m in client.models.list(limit=7)]
    assert names == ACME_MODELS
    first = client.models.list(limit=7)
    assert first.current_page == 1 and len(first.items) == 7
    raw = client.models.with_raw_response.list(limit=7, page=2).http_response.json()
    assert raw["total_item_count"] == len(ACME_MODELS) and raw["items_per_page"] == 7 and raw["current_page"] == 2


def test_v4_pagination_edges(base_url: str) -> None:
    client = v4(base_url)
    assert client.models.list(limit=10_000).items.__len__() == len(ACME_MODELS)
    assert client.models.list(limit=len(ACME_MODELS), page=2).items == []
    assert client.models.list(limit=1, page=len(ACME_MODELS)).items[0].name == ACME_MODELS[-1]
    with pytest.raises(scale_gp.UnprocessableEntityError):
        client.models.list(limit=10_001)
    with pytest.raises(scale_gp.UnprocessableEntityError):
        client.models.list(page=0)


def test_v4_retrieve_model_by_id_and_name(base_url: str) -> None:
    client = v4(base_url)
    echo = CATALOG.models["echo"]
    got = client.models.retrieve(echo.id)
    assert got.name == "echo" and got.model_type == "COMPLETION" and got.deployment_count == 1
    assert got.model_template_id == echo.template.id
    assert got.request_schema["properties"]["model_request_parameters"]["properties"]["temperature"]["type"] == "number"
    assert got.supports_multi_turn is False
    assert client.models.retrieve("echo").id == echo.id
    with_views = client.models.retrieve(echo.id, view=["Deployments", "ModelGroup"])
    assert with_views.model_group.name == "demo"
    assert with_views.deployments[0].status == "DEPLOYING"


def test_v4_filters_and_sorting(base_url: str) -> None:
    client = v4(base_url, key=BOTH_KEY)
    assert [m.name for m in client.models.list(model_type="COMPLETION")] == ["echo"]
    demo = CATALOG.groups["demo"]
    assert sorted(m.name for m in client.models.list(model_group_id=demo.id)) == ["echo", "t4-embedder"]
    assert sorted(m.name for m in client.models.list(model_group_id="demo")) == ["echo", "t4-embedder"]
    assert [m.name for m in client.models.list(account_id="other-account")] == OTHER_MODELS
    desc = [m.name for m in client.models.list(sort_by=["name:desc"], limit=10_000)]
    assert desc == sorted(ACME_MODELS + OTHER_MODELS, reverse=True)
    with pytest.raises(scale_gp.UnprocessableEntityError):
        client.models.with_raw_response.list(extra_query={"sort_by": "nonsense:asc"})


def test_v4_templates_groups_deployments(base_url: str) -> None:
    client = v4(base_url)
    templates = list(client.model_templates.list())
    assert [t.name for t in templates] == ["echo-cpu"]
    assert client.model_templates.retrieve(templates[0].id).vendor_configuration.bundle_config.image == "demo-model"
    groups = list(client.model_groups.list())
    assert [g.name for g in groups] == ["demo"]
    assert client.model_groups.retrieve(groups[0].id).description == "The dev stack's models"
    echo = CATALOG.models["echo"]
    deps = list(client.models.deployments.list(echo.id))
    assert len(deps) == 1 and deps[0].model_instance_id == echo.id and deps[0].status == "DEPLOYING"
    assert client.models.deployments.retrieve(deps[0].id, model_instance_id=echo.id).name == "echo"
    all_deps = list(client.models.deployments.list_all(limit=5))
    assert sorted(d.model_instance_id for d in all_deps) == sorted(
        m.id for m in CATALOG.models.values() if m.account_id == "dev-account")


# --- v5 ---------------------------------------------------------------------------


def test_v5_lists_every_page_forward_and_back(base_url: str) -> None:
    client = v5(base_url)
    models = list(client.models.list(limit=4))
    assert [m.name for m in models] == ACME_MODELS
    assert all(m.status == "deploying" and m.status_reason for m in models)
    page = client.models.list(limit=4, starting_after=models[3].id)
    assert [m.name for m in page.items] == ACME_MODELS[4:8] and page.has_more is True
    last = client.models.list(limit=4, starting_after=models[-5].id)
    assert [m.name for m in last.items] == ACME_MODELS[-4:] and last.has_more is False
    back = client.models.list(limit=3, ending_before=models[5].id)
    assert [m.name for m in back.items] == ACME_MODELS[2:5] and back.has_more is True
    backwards = [m.name for m in client.models.list(limit=3, ending_before=models[-1].id)]
    assert len(backwards) == len(ACME_MODELS) - 1
    raw = client.models.with_raw_response.list(limit=4).http_response.json()
    assert raw["object"] == "list" and raw["has_more"] is True


def test_v5_filters_sorting_retrieve(base_url: str) -> None:
    client = v5(base_url)
    assert [m.name for m in client.models.list(name="echo")] == ["echo"]
    assert list(client.models.list(name="other-00")) == []  # another account's
    assert len(list(client.models.list(model_vendor="launch", limit=100))) == len(ACME_MODELS)
    assert list(client.models.list(model_vendor="openai")) == []
    desc = [m.name for m in client.models.list(sort_order="desc", limit=100)]
    assert desc == sorted(ACME_MODELS, reverse=True)
    by_type = [m.api_model_type for m in client.models.list(sort_by="model_type", limit=100)]
    assert by_type == sorted(by_type)
    t4 = CATALOG.models["t4-embedder"]
    got = client.models.retrieve(t4.id)
    assert got.name == "t4-embedder" and got.object == "model" and got.api_model_vendor == "launch"
    assert got.vendor_configuration.infra.gpu_type == "nvidia-tesla-t4"
    with pytest.raises(scale_gp_beta.UnprocessableEntityError):
        client.models.list(starting_after="no-such-id")


# --- auth -------------------------------------------------------------------------


def test_401_without_or_with_a_wrong_key(base_url: str) -> None:
    for path in ("/v4/models", "/v5/models", "/v4/model-templates", "/v4/models/echo"):
        r = httpx.get(base_url + path)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    with pytest.raises(scale_gp.AuthenticationError):
        v4(base_url, key="not-a-key").models.list()
    with pytest.raises(scale_gp_beta.AuthenticationError):
        v5(base_url, key="not-a-key").models.list()
    assert httpx.get(base_url + "/healthz").status_code == 200
    assert httpx.get(base_url + "/readyz").status_code == 200


def test_404_across_accounts(base_url: str) -> None:
    other = CATALOG.models["other-00"]
    with pytest.raises(scale_gp.NotFoundError) as caught:
        v4(base_url).models.retrieve(other.id)
    missing = httpx.get(f"{base_url}/v4/models/no-such-model", headers={"x-api-key": ACME_KEY}).json()
    assert caught.value.body["detail"] == missing["detail"].replace("no-such-model", other.id)
    with pytest.raises(scale_gp_beta.NotFoundError):
        v5(base_url).models.retrieve(other.id)
    with pytest.raises(scale_gp.NotFoundError):
        v4(base_url).model_groups.retrieve(CATALOG.groups["others"].id)
    assert v4(base_url, key=OTHER_KEY).models.retrieve(other.id).name == "other-00"
    # narrowing: a key for both accounts, with one selected, sees only that one
    narrowed = v4(base_url, key=BOTH_KEY, account="other-account")
    assert [m.name for m in narrowed.models.list()] == OTHER_MODELS
    with pytest.raises(scale_gp.NotFoundError):
        narrowed.models.retrieve("echo")
    with pytest.raises(scale_gp.PermissionDeniedError):
        v4(base_url, key=ACME_KEY, account="other-account").models.list()


# --- writes -----------------------------------------------------------------------


def test_405_on_writes_names_the_config(base_url: str) -> None:
    client = v4(base_url)
    echo = CATALOG.models["echo"]
    with pytest.raises(scale_gp.APIStatusError) as caught:
        client.models.update(echo.id, description="new words")
    assert caught.value.status_code == 405
    body = caught.value.body
    assert body["config_path"] == "sgp-infra:models.echo"
    assert body["commands"] == ["pulumi config set --stack dev --path sgp-infra:models.echo.description 'new words'"]
    with pytest.raises(scale_gp.APIStatusError) as caught:
        client.model_groups.models.create(echo.id, model_group_id=CATALOG.groups["demo"].id)
    assert caught.value.status_code == 405
    assert caught.value.body["config_path"] == "sgp-infra:models.echo.model_group_id"
    for call in (lambda: client.models.delete(echo.id),
                 lambda: client.model_templates.delete(CATALOG.templates["echo-cpu"].id),
                 lambda: client.model_groups.create(account_id="dev-account", name="g"),
                 lambda: client.models.deployments.create(echo.id, name="d"),
                 lambda: v5(base_url).models.delete(echo.id),
                 lambda: v5(base_url).models.create(model={
                     "name": "x", "model_vendor": "launch", "vendor_configuration": {
                         "model_image": {"registry": "r", "repository": "p", "tag": "t", "command": ["c"]},
                         "model_infra": {}}})):
        with pytest.raises((scale_gp.APIStatusError, scale_gp_beta.APIStatusError)) as c:
            call()
        assert c.value.status_code == 405 and "pulumi" in " ".join(c.value.body["commands"])
    # another account's model: same generic answer as a missing one
    other = CATALOG.models["other-00"]
    with pytest.raises(scale_gp.APIStatusError) as caught:
        client.models.delete(other.id)
    assert caught.value.body["config_path"] == "sgp-infra:models.NAME"
    assert httpx.delete(f"{base_url}/v4/models/{other.id}").status_code == 401


def test_405_deployment_writes_and_placeholders(base_url: str) -> None:
    echo = CATALOG.models["echo"]
    headers = {"x-api-key": ACME_KEY}
    deployment = f"{base_url}/v4/models/{echo.id}/deployments/d"
    scaled = httpx.patch(deployment, headers=headers, json={"vendor_configuration": {"max_workers": 3}}).json()
    assert scaled["commands"] == ["pulumi config set --stack dev --path sgp-infra:models.echo.max_workers 3"]
    bare = httpx.patch(deployment, headers=headers, json={}).json()
    assert bare["commands"] == ["pulumi config set --stack dev --path sgp-infra:models.echo.min_workers <n>"]
    deleted = httpx.delete(deployment, headers=headers).json()
    assert deleted["commands"] == ["pulumi config rm --stack dev --path sgp-infra:models.echo"]
    # a value that looks like a placeholder is still quoted; an oversized body is ignored, not buffered
    tagged = httpx.patch(f"{base_url}/v4/models/{echo.id}", headers=headers, json={"description": "<b>x"}).json()
    assert tagged["commands"] == ["pulumi config set --stack dev --path sgp-infra:models.echo.description '<b>x'"]
    big = httpx.patch(f"{base_url}/v4/models/{echo.id}", headers=headers,
                      json={"description": "x" * (128 * 1024)})
    assert big.status_code == 405
    assert big.json()["commands"] == [
        """pulumi config set --stack dev --path 'sgp-infra:models.echo["<field>"]' <value>"""]
