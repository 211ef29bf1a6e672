"""``/metrics``: the families the dashboards and KEDA read, in one process and under prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``: several worker processes per pod)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import generate_latest

from sgp_infra.api.inference.metrics import InferenceMetrics
from sgp_infra.api.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
ROUTE = "/v4/models/{model_deployment_id}/completions"


def record_some(metrics: Metrics, inference: InferenceMetrics, in_flight: int) -> None:
    metrics.record("POST", "/v4/models/m/completions", ROUTE, 200, 0.003)
    inference.answered("m", "completion", 200)
    inference.answered("m", "completion", 502, "read_timeout")
    inference.upstream_latency.labels("m").observe(0.002)
    inference.cold_start_wait.labels("m").observe(12.0)
    inference.wakeups.labels("m").inc()
    inference.in_flight.labels("m").inc(in_flight)


def test_service_metrics_keep_their_names_and_labels() -> None:
    """The families ``/metrics`` has always shown, with their label names, from both metric owners."""
    metrics = Metrics()
    inference = InferenceMetrics(metrics.registry)
    record_some(metrics, inference, 3)
    assert metrics.exposed() is metrics.registry  # no PROMETHEUS_MULTIPROC_DIR here
    text = generate_latest(metrics.exposed()).decode()
    for line in (
        f'sgp_infra_api_requests_total{{method="POST",route="{ROUTE}",status="200"}} 1.0',
        f'sgp_infra_api_request_duration_seconds_bucket{{le="0.005",method="POST",route="{ROUTE}"}} 1.0',
        'sgp_infra_model_requests_total{code="200",model="m",operation="completion"} 1.0',
        'sgp_infra_model_requests_total{code="502",model="m",operation="completion"} 1.0',
        'sgp_infra_model_errors_total{kind="read_timeout",model="m"} 1.0',
        'sgp_infra_model_upstream_latency_seconds_count{model="m"} 1.0',
        'sgp_infra_model_cold_start_wait_seconds_bucket{le="30.0",model="m"} 1.0',
        'sgp_infra_model_wakeups_total{model="m"} 1.0',
        'sgp_infra_model_requests_in_flight{model="m"} 3.0',
        "# TYPE sgp_infra_model_requests_in_flight gauge",
        "# TYPE sgp_infra_model_upstream_latency_seconds histogram",
        "# TYPE sgp_infra_model_wakeups_total counter",
    ):
        assert line in text, line


WORKER = textwrap.dedent("""
    import os
    import sys
    from sgp_infra.api.inference.metrics import InferenceMetrics
    from sgp_infra.api.metrics import Metrics
    sys.path.insert(0, {tests!r})
    from test_api_metrics import record_some

    metrics = Metrics()
    record_some(metrics, InferenceMetrics(metrics.registry), int(sys.argv[1]))
    print(os.getpid())
""")

SCRAPE = textwrap.dedent("""
    import sys
    from prometheus_client import generate_latest
    from prometheus_client.multiprocess import mark_process_dead
    from sgp_infra.api.inference.metrics import InferenceMetrics
    from sgp_infra.api.metrics import Metrics

    metrics = Metrics()
    InferenceMetrics(metrics.registry)  # this worker has counted nothing itself
    for pid in sys.argv[1:]:  # what the server does when a worker exits
        mark_process_dead(int(pid))
    print(generate_latest(metrics.exposed()).decode())
""")


def test_multiprocess_mode_sums_every_worker(tmp_path: Path) -> None:
    """Two worker processes write their values to the shared directory; a third one's ``/metrics``
    shows the sums: counters and histograms added up, the in-flight gauge summed over live workers
    (``livesum``: a worker marked dead no longer counts in flight)."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    worker = WORKER.format(tests=str(ROOT / "tests"))
    pids = [subprocess.run([sys.executable, "-c", worker, str(in_flight)], env=env, check=True, timeout=60,
                           cwd=ROOT, capture_output=True, text=True).stdout.strip() for in_flight in (2, 3)]
    assert list(tmp_path.glob("*.db")), "the workers wrote no value files"

    def scrape(*dead: str) -> str:
        return subprocess.run([sys.executable, "-c", SCRAPE, *dead], env=env, check=True, timeout=60, cwd=ROOT,
                              capture_output=True, text=True).stdout

    text = scrape()
    for line in (
        'sgp_infra_model_requests_in_flight{model="m"} 5.0',
        f'sgp_infra_api_requests_total{{method="POST",route="{ROUTE}",status="200"}} 2.0',
        'sgp_infra_model_requests_total{code="200",model="m",operation="completion"} 2.0',
        'sgp_infra_model_errors_total{kind="read_timeout",model="m"} 2.0',
        'sgp_infra_model_upstream_latency_seconds_count{model="m"} 2.0',
        'sgp_infra_model_wakeups_total{model="m"} 2.0',
    ):
        assert line in text, (line, text)
    text = scrape(pids[0])
    assert 'sgp_infra_model_requests_in_flight{model="m"} 3.0' in text, text
    assert 'sgp_infra_model_requests_total{code="200",model="m",operation="completion"} 2.0' in text
