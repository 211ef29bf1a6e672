"""``bench/bench_routing.py --quick`` runs end to end and prints its table (no figure is asserted).

A shorter warm-up and measured window than ``--quick``'s own (:data:`SHORT`): the
tests check that every strategy runs and completes requests, not what it measures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHORT = ["--quick", "--warmup", "0.3", "--seconds", "0.8"]


def test_the_routing_bench_runs_and_prints_a_table() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_routing.py"), *SHORT], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.count("ms ") == 2}
    for strategy in ("service", "least-load", "prefix-affinity"):
        assert strategy in rows and rows[strategy][-1] == "0", done.stdout  # no errors
        assert float(rows[strategy][3]) > 0, done.stdout  # requests completed in the measured window
    assert "prefix-affinity cache hit rate" in done.stdout and "least-load TTFT p99" in done.stdout
    assert "no router could reach more than" in done.stdout and "of that ceiling" in done.stdout


def test_via_api_sends_the_workload_through_serve_and_reads_the_picks_from_its_metrics() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_routing.py"), *SHORT, "--via-api",
                           "--strategies", "service,prefix-affinity"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "routing: through the API" in done.stdout
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.count("ms ") == 2}
    for strategy in ("service", "prefix-affinity"):
        assert strategy in rows and rows[strategy][-1] == "0", done.stdout  # no errors
        assert float(rows[strategy][3]) > 0, done.stdout
    hits, spills = (int(n) for n in rows["prefix-affinity"][-2].split("/"))
    assert hits > 0, done.stdout  # counted by the API's sgp_infra_model_routing_total
