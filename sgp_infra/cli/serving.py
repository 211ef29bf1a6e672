"""How ``serve`` runs the API: one process, or several uvicorn workers on one socket.

``serve`` parses its flags into :class:`ServeOptions` and calls :func:`run`.
With one worker the app is built in this process.  With ``--workers N``
uvicorn's public ``Multiprocess`` supervisor spawns N processes on the
socket ``serve`` bound, and each builds its own app through the factory
:func:`app_from_env` (uvicorn's ``factory=True`` with an import string): the
options travel as JSON in the ``SGP_INFRA_SERVE_OPTIONS`` environment
variable, the API keys in ``SGP_INFRA_API_KEYS`` as always, and each worker
loads the catalogue file itself.

Prometheus metrics are per process, so with several workers ``serve``
creates a fresh ``PROMETHEUS_MULTIPROC_DIR`` (a temporary directory; ``/tmp``
is an emptyDir in the pod) before the workers start, for
prometheus_client's multiprocess mode, and removes it when they have stopped.

Every worker runs uvicorn's HTTP protocol inside the connection guard
(``sgp_infra.api.connections``) with the same limits.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..catalog import Catalog, load_file
from ..catalog.settings import ApiLimits

#: The environment variable that carries :class:`ServeOptions` to worker processes.
ENV_OPTIONS = "SGP_INFRA_SERVE_OPTIONS"
#: prometheus_client's multiprocess directory variable.
ENV_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
#: The app factory uvicorn imports in each worker.
FACTORY = f"{__name__}:app_from_env"


@dataclass(frozen=True)
class ServeOptions:
    """Everything a worker needs to build the same app as ``serve`` (JSON-serialisable; never a key)."""

    config_file: str
    #: The stack the 405 answers name (``serve.write_target``), else ``writes_file``, the file to edit.
    stack: Optional[str] = None
    writes_file: Optional[str] = None
    host: str = "127.0.0.1"
    status: str = "auto"
    namespace: Optional[str] = None
    backends: dict[str, str] = field(default_factory=dict)
    #: Bind the public dev key to every account (loopback, ``SGP_INFRA_API_KEYS`` unset).
    dev_key: bool = False
    access_log: bool = True
    log_level: str = "info"
    workers: int = 1
    limits: dict[str, Any] = field(default_factory=dict)
    #: The task broker of ASYNC models (``serve`` may have started a local one).
    nats_url: Optional[str] = None

    def api_limits(self) -> ApiLimits:
        return ApiLimits.model_validate(self.limits)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ServeOptions:
        return cls(**json.loads(text))


def dev_keys(catalog: Catalog) -> dict[str, frozenset[str]]:
    """The dev key, seeing every account of the catalogue."""
    from ..api.auth import DEV_API_KEY

    accounts = frozenset({catalog.settings.account_id}
                         | {m.account_id for m in catalog.models.values()}
                         | {t.account_id for t in catalog.templates.values()}
                         | {g.account_id for g in catalog.groups.values()})
    return {DEV_API_KEY: accounts}


def build_status(kind: str, catalog: Catalog, namespace: Optional[str], backends: dict[str, str]):  # type: ignore[no-untyped-def]
    from ..api.common import model_base_url
    from ..api.status import ProbeStatus, StaticStatus

    if kind == "auto":
        kind = "kubernetes" if os.environ.get("KUBERNETES_SERVICE_HOST") else "probe"
    if kind == "none":
        return StaticStatus()
    if kind == "kubernetes":
        from ..api.kube_status import KubeStatus

        return KubeStatus(namespace or catalog.settings.namespace)
    ns = catalog.settings.namespace
    return ProbeStatus({m.object_name: model_base_url(m, backends, ns) + m.healthcheck_route
                        for m in catalog.models.values()})


def build_app(options: ServeOptions, catalog: Optional[Catalog] = None) -> Any:
    """The API app for ``options`` (the catalogue is loaded from its file unless given)."""
    from ..api import create_app
    from ..api.auth import api_keys_from_env

    catalog = catalog or load_file(Path(options.config_file))
    keys = dev_keys(catalog) if options.dev_key else api_keys_from_env()
    if keys is None:  # serve checked before starting any worker; the environment changed since
        raise RuntimeError("SGP_INFRA_API_KEYS is not set in this worker's environment")
    status = build_status(options.status, catalog, options.namespace, dict(options.backends))
    return create_app(catalog, api_keys=keys, status_source=status, stack=options.stack,
                      config_file=options.writes_file, backends=dict(options.backends),
                      limits=options.api_limits(), nats_url=options.nats_url)


def app_from_env() -> Any:
    """uvicorn's app factory in a worker process: the app for ``$SGP_INFRA_SERVE_OPTIONS``."""
    from ..api.logs import configure_json_logging

    options = ServeOptions.from_json(os.environ[ENV_OPTIONS])
    configure_json_logging(access_log=options.access_log)
    forget_dead_workers()
    app = build_app(options)
    tune_gc()
    return app


def forget_dead_workers() -> None:
    """Drop the live-gauge files of worker processes that are gone (a worker uvicorn restarted).

    prometheus_client keeps each process's values in files named by its pid;
    a gauge in a ``live*`` mode must stop counting a dead process, which is
    what its ``mark_process_dead`` does.
    """
    directory = os.environ.get(ENV_MULTIPROC)
    if not directory or not os.path.isdir(directory):
        return
    from prometheus_client import multiprocess

    pids = set()
    for name in os.listdir(directory):
        stem = name.rsplit(".", 1)[0]
        tail = stem.rsplit("_", 1)[-1]
        if tail.isdigit():
            pids.add(int(tail))
    for pid in pids:
        if pid != os.getpid() and not _alive(pid):
            multiprocess.mark_process_dead(pid, directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tune_gc() -> None:
    """Garbage-collector settings for a long-running request server.

    * ``gc.freeze()`` after start-up moves the catalogue, the app and every
      imported module out of the collector's reach: they live as long as the
      process, and full collections no longer walk them.
    * A first-generation threshold of 7,000 instead of 700: each inference
      request allocates dozens of short-lived containers (aiohttp, Starlette),
      so the default ran a collection every few requests.  Cyclic garbage is
      still collected, just in larger batches.
    """
    import gc

    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(7000, gen1, gen2)


def uvicorn_config(options: ServeOptions, app: Any) -> Any:
    """uvicorn's settings for ``options``: ``app`` is the app, or the factory's import string."""
    import uvicorn

    from ..api.connections import guarded_http

    limits = options.api_limits()
    return uvicorn.Config(
        app, factory=isinstance(app, str), workers=options.workers, host=options.host,
        log_config=None, access_log=False, log_level=options.log_level, lifespan="on", ws="none",
        http=guarded_http(limits),
        timeout_keep_alive=limits.keep_alive_timeout_seconds,
        # Nothing in the app reads the client address or scheme, so uvicorn's X-Forwarded-* rewriting
        # (a middleware layer on every request) is off; no "server: uvicorn" header either.
        proxy_headers=False, server_header=False)


def run(options: ServeOptions, sock: socket.socket, catalog: Catalog) -> int:
    """Serve on ``sock`` until stopped: in this process, or in ``options.workers`` worker processes."""
    import uvicorn

    if options.workers == 1:
        app = build_app(options, catalog)
        tune_gc()
        uvicorn.Server(uvicorn_config(options, app)).run(sockets=[sock])
        return 0
    from uvicorn.supervisors import Multiprocess

    metrics_dir = tempfile.mkdtemp(prefix="sgp-infra-metrics-")
    saved = {k: os.environ.get(k) for k in (ENV_MULTIPROC, ENV_OPTIONS)}
    os.environ[ENV_MULTIPROC] = metrics_dir  # before any worker imports prometheus_client
    os.environ[ENV_OPTIONS] = options.to_json()
    try:
        config = uvicorn_config(options, FACTORY)
        Multiprocess(config, sockets=[sock]).run()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
