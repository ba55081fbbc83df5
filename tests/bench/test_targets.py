"""bench/targets.py without a network: judging figures against the bounds of issue 13,
and reading the records of other runs (bench-peers, bench/dht.py)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import mesh
import targets


def a_run(
    rate: float = 5.0, *, latency: float = 0.02, missing: int = 0, post_rate: float | None = None
) -> mesh.Run:
    """A run of 10 bulletins to 3 members at ``rate``, each delivery ``latency`` s after its
    post, the last ``missing`` deliveries lost; posted at ``post_rate`` (default: ``rate``)."""
    run = mesh.Run(rate, 10, 3)
    step = 1 / (post_rate or rate)
    for k in range(10):
        run.posted[f"{k:02x}"] = k * step
        for member in range(3):
            if k * 3 + member < 30 - missing:
                run.arrive(member, f"{k:02x}", k * step + latency)
    return run


def test_judge_bounds_at_most_and_at_least_and_nan_is_a_miss() -> None:
    assert targets.judge(50.0, 50.0) == targets.MET
    assert targets.judge(50.1, 50.0) == targets.MISS
    assert targets.judge(300.0, 300.0, at_least=True) == targets.MET
    assert targets.judge(299.0, 300.0, at_least=True) == targets.MISS
    assert targets.judge(math.nan, 1.0) == targets.MISS
    assert targets.judge(math.nan, 1.0, at_least=True) == targets.MISS


def test_delivery_is_the_least_share_over_runs_and_a_missing_run_misses() -> None:
    row = targets.delivery_row({"a": a_run(), "b": a_run(missing=3)})
    assert (row.figure, row.verdict) == ("90.00 %", targets.MISS)
    assert targets.delivery_row({"a": a_run(), "b": a_run()}).verdict == targets.MET
    assert targets.delivery_row({"a": a_run(), "b": None}).verdict == targets.MISS


def test_latency_row_judges_the_p99_in_milliseconds() -> None:
    assert targets.latency_row(a_run(latency=0.049), 5, 50).verdict == targets.MET
    row = targets.latency_row(a_run(latency=0.051), 5, 50)
    assert (row.figure, row.verdict) == ("51.0 ms", targets.MISS)
    assert targets.latency_row(None, 5, 50).verdict == targets.MISS


def test_cpu_is_counted_in_verifications_and_one_process_per_node_is_shown_beside() -> None:
    inproc, procs = a_run(60), a_run(60)
    inproc.cpu_s = 30 * 0.0002  # 0.2 ms per delivery
    procs.cpu_s = 30 * 0.0005
    procs.cpu_by_node = [0.001, procs.cpu_s - 0.001]
    row = targets.cpu_row(inproc, procs, verify_s=0.00004)
    assert (row.figure, row.verdict) == ("5.0 verif. (one process per node 12.5)", targets.MET)
    inproc.cpu_s = 30 * 0.00025
    assert targets.cpu_row(inproc, procs, verify_s=0.00004).verdict == targets.MISS


def test_sustaining_needs_every_delivery_p99_under_1_s_and_the_poster_on_time() -> None:
    assert targets.sustains(a_run(300))
    assert not targets.sustains(a_run(300, missing=1))
    assert not targets.sustains(a_run(300, latency=1.5))
    assert not targets.sustains(a_run(300, post_rate=250))
    assert targets.why_not(a_run(300, post_rate=250)) == "posted at 250/s"


def test_the_rate_row_takes_the_highest_offered_rate_sustained() -> None:
    runs = [a_run(60), a_run(240), a_run(300, post_rate=200)]
    row = targets.rate_row(runs, "300/s was not sustained")
    assert (row.figure, row.verdict, row.value) == ("240/s", targets.MISS, 240)
    assert targets.rate_row([*runs[:2], a_run(360)], "").verdict == targets.MET
    assert targets.rate_row([a_run(60, missing=1)], "").figure == "-"


def test_bytes_are_session_bytes_per_delivery_in_encoded_bulletin_sizes() -> None:
    procs, inproc = a_run(60), a_run(60)
    for run, per_delivery in ((procs, 2400), (inproc, 3000)):
        run.sizes = [1200] * 10
        run.wire_out = 30 * per_delivery
        run.bytes_out = 30 * (per_delivery - 20)
        run.gossip = {"received": 30, "duplicates": 60, "pushed": 90}
    row = targets.bytes_row(procs, inproc)
    assert (row.figure, row.verdict) == ("2.00 (in one process 2.50)", targets.MET)
    assert any("3.00 copies received per delivery (2.00 duplicates)" in n for n in row.notes)
    procs.sizes = []
    assert targets.bytes_row(procs, inproc).verdict == targets.MISS


def peer(impl: str, sustained: bool, p99: float, cpu: float, why: str = "") -> dict[str, Any]:
    return {"impl": impl, "sustained": sustained, "why_not": why, "latency_ms": {"p99": p99},
            "cpu_ms_per_delivery": cpu}  # fmt: skip


def write_sweep(where: Path, prefix: str, when: str, results: dict[str, Any]) -> None:
    common = {"when": when, "machine": {"cores": 2}}
    (where / f"{prefix}-summary.json").write_text(json.dumps({"table": [], **common}))
    doc = {"workload": {"nodes": 10, "rate": 5.0}, "results": results, **common}
    (where / f"{prefix}-n10-r5.json").write_text(json.dumps(doc))


def test_peer_rows_come_from_the_newest_sweep_and_only_where_both_sustain(tmp_path: Path) -> None:
    write_sweep(tmp_path, "peers-quick", "2026-01-01 10:00:00 +0000", {})
    write_sweep(tmp_path, "peers", "2026-02-01 10:00:00 +0000", {
        "meshnode": peer("meshnode", True, 20.0, 0.5),
        "py-libp2p": peer("py-libp2p", False, 5000.0, 10.0, "p99 5000 ms"),
        "js-libp2p": peer("js-libp2p", True, 40.0, 2.0),
    })  # fmt: skip
    found = targets.newest_peers(tmp_path)
    assert found is not None
    source, runs = found
    assert source == "make bench-peers of 2026-02-01 10:00:00 +0000"
    rows = {r.target: r for r in targets.peer_rows(source, runs)}
    latency = rows["p99 per delivery ÷ js-libp2p's, 10 nodes, 5/s"]
    assert (latency.figure, latency.verdict, latency.source) == ("0.50×", targets.MET, source)
    python = rows["CPU per delivery ÷ py-libp2p's, 10 nodes, 5/s"]
    assert python.verdict == targets.NA
    assert python.notes == ("py-libp2p does not sustain it (p99 5000 ms)",)
    js = rows["CPU per delivery ÷ js-libp2p's, 10 nodes, 5/s"]
    assert (js.figure, js.verdict) == ("0.25×", targets.MISS)
    assert targets.newest_peers(tmp_path / "nothing") is None


def test_dht_rows_say_not_measured_without_the_record(tmp_path: Path) -> None:
    (row,) = targets.dht_rows(tmp_path / "dht.json")
    assert row.verdict == targets.NOT_MEASURED
    assert "run bench/dht.py" in row.figure


def test_dht_rows_set_meshnode_against_stock_per_size_and_quorum(tmp_path: Path) -> None:
    def run(
        impl: str, quorum: int, p99: float, joining: bool = False, ok: int = 100, **more: str
    ) -> dict[str, Any]:
        return {"impl": impl, "nodes": 50, "quorum": quorum, "joining": joining, "lookups": 100,
                "local": 7, "success": ok, "p50_ms": p99 / 2, "p99_ms": p99, **more}  # fmt: skip

    path = tmp_path / "dht.json"
    path.write_text(json.dumps({"machine": {}, "when": "2026-03-01 10:00:00 +0000", "runs": [
        run("stock", 1, 2.0), run("meshnode", 1, 3.0, host="thread"), run("meshnode", 3, 5.0),
        run("meshnode", 3, 9.0, joining=True, ok=99),
    ], "other_hosts": [run("meshnode", 1, 8.0, host="trio-asyncio")]}))  # fmt: skip
    rows = targets.dht_rows(path)
    assert [(r.target, r.figure, r.verdict) for r in rows] == [
        ("DHT lookup p99 ÷ stock's, 50 nodes, quorum 1, thread", "1.50×", targets.MET),
        ("DHT lookup p99 ÷ stock's, 50 nodes, quorum 3", "no stock run", targets.NOT_MEASURED),
        ("DHT success, 20 % of nodes joining, 50 nodes, quorum 3", "99.00 %", targets.MISS),
    ]
    assert rows[0].notes[1].startswith("stock: 100/100 network lookups found, p50 1.0 ms")
    assert rows[0].notes[2].startswith("meshnode (trio-asyncio): 100/100 network lookups found")
    assert {r.source for r in rows} == {"bench/dht.py of 2026-03-01 10:00:00 +0000"}


def test_the_table_numbers_rows_and_names_the_runs_not_this_one() -> None:
    rows = [
        targets.Row("latency", "≤ 50 ms", "40.0 ms", targets.MET, 40.0, ("p50 20 ms",)),
        targets.Row("p99 ÷ js", "≤ 1×", "0.50×", targets.MET, 0.5, (), "make bench-peers of X"),
    ]
    text = targets.table(rows)
    assert "From make bench-peers of X, not this run:" in text
    assert " 1. latency" in text
    assert " 1. p50 20 ms" in text


def test_profile_areas_name_where_code_lives() -> None:
    assert targets.area_of("~", "<method 'execute' of 'sqlite3.Connection' objects>") == "SQLite"
    assert targets.area_of("~", "<built-in method _sodium.crypto_sign_open>") == "libsodium"
    assert targets.area_of("/x/meshnode/core/gossip/_intake.py", "check") == (
        "meshnode/core/gossip"
    )
    assert targets.area_of("/x/meshnode/archive.py", "seal") == "meshnode/archive"
    assert targets.area_of("/v/lib/python3.11/ipaddress.py", "f") == "stdlib ipaddress"
    assert targets.area_of("/v/lib/python3.11/site-packages/trio/_core/_run.py", "f") == "trio"
    assert targets.area_of("~", "<built-in method builtins.len>") == targets.BUILTIN
