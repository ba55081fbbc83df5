"""The simulation's sets of scenarios, its targets (issue 13), tables and plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from sim.scenarios import Scenario

if TYPE_CHECKING:
    from pathlib import Path

SIZES: Final = (100, 300, 1000, 3000, 10000)
QUICK_SIZES: Final = (100, 300, 1000)


def full_set(*, quick: bool = False) -> list[Scenario]:
    """Every scenario of ``make sim`` (``--quick``: the same kinds, smaller)."""
    sizes = QUICK_SIZES if quick else SIZES
    honest = 300 if quick else 1000
    crowd = 3 * honest
    out = [Scenario(name=f"sweep-{n}", nodes=n) for n in sizes]
    out.append(Scenario(name="churn", nodes=honest, churn=0.10, direct=20))
    out.append(Scenario(name="silent", nodes=honest, silent=crowd))
    out.append(Scenario(name="flood", nodes=honest, flooders=crowd))
    out.append(Scenario(name="eclipse", nodes=honest, eclipsers=crowd))
    out.append(Scenario(name="silent-churn", nodes=honest, members=honest * 3 // 10,
                        silent=crowd, churn=0.10, horizon=200.0))
    third = crowd // 3
    out.append(
        Scenario(name="mixed", nodes=honest, silent=third, flooders=third, eclipsers=third)
    )
    return out


@dataclass(frozen=True)
class Target:
    """One of issue 13's targets, with the figure that meets or misses it."""

    name: str
    figure: str
    met: bool


def _get(record: Mapping[str, object], *path: str) -> float:
    value: object = record
    for key in path:
        assert isinstance(value, Mapping)
        value = value[key]
    assert isinstance(value, (int, float))
    return float(value)


def baseline_of(
    records: Mapping[str, Mapping[str, object]], run: Mapping[str, object]
) -> Mapping[str, object] | None:
    """The run without adversaries that ``run`` compares with: the sweep's run with as
    many honest nodes (the same seed, so the same honest network and bulletins)."""
    return records.get(f"sweep-{int(_get(run, 'nodes'))}")


def targets(records: Mapping[str, Mapping[str, object]]) -> list[Target]:
    """Check the targets against a run's records (keyed by scenario name)."""
    out: list[Target] = []
    base = records.get("sweep-1000")
    if base is not None:
        worst = max(_get(base, t, "p95") for t in ("public", "channel"))
        out.append(Target(
            f"p95 under 1 s at {int(_get(base, 'nodes'))} nodes, {_get(base, 'loss'):.0%} loss",
            f"p95 {_get(base, 'public', 'p95'):.3f} s public, "
            f"{_get(base, 'channel', 'p95'):.3f} s channel",
            worst < 1.0,
        ))
    churn = records.get("churn")
    if churn is not None:
        public, channel = _get(churn, "public", "delivered"), _get(churn, "channel", "delivered")
        extra = churn["extra"]
        assert isinstance(extra, Mapping)
        direct = float(extra.get("direct_delivered", 1.0))
        out.append(Target(
            f"100 % eventual delivery, {_get(churn, 'churn'):.0%} of the nodes churning",
            f"public {public:.2%}, channel {channel:.2%}, direct {direct:.2%} "
            f"(all by t = {_get(churn, 'end'):.0f} s)",
            min(public, channel, direct) >= 1.0,
        ))
    small, large = records.get("sweep-1000"), records.get("sweep-10000")
    if small is not None and large is not None:
        parts, ok = [], True
        for topic in ("public", "channel"):
            a, b = _get(small, topic, "bytes_per_node"), _get(large, topic, "bytes_per_node")
            growth = b / a - 1.0
            ok &= abs(growth) <= 0.20
            parts.append(f"{topic} {a:,.0f} → {b:,.0f} B ({growth:+.1%})")
        out.append(Target("bytes per node per bulletin within 20 % from 1,000 to 10,000",
                          ", ".join(parts), ok))
    for name in ("silent", "flood", "eclipse", "mixed"):
        run = records.get(name)
        baseline = None if run is None else baseline_of(records, run)
        if run is None or baseline is None:
            continue
        delivered = min(_get(run, t, "delivered") for t in ("public", "channel"))
        ratios = [
            _get(run, t, "p99") / max(_get(baseline, t, "p99"), 1e-9)
            for t in ("public", "channel")
        ]
        adv = run["adversaries"]
        assert isinstance(adv, Mapping)
        crowd = sum(int(v) for v in adv.values())
        out.append(Target(
            f"{name}: {int(_get(run, 'nodes'))} honest + {crowd} adversaries, "
            "delivery ≥ 99 %, p99 within 2×",
            f"delivered {delivered:.2%}, p99 ×{ratios[0]:.2f} public, ×{ratios[1]:.2f} channel",
            delivered >= 0.99 and max(ratios) <= 2.0,
        ))
    return out


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def tables(records: Mapping[str, Mapping[str, object]]) -> str:
    """The figures as Markdown tables (what the CLI prints and the doc shows)."""
    lines = [
        "Delivery, latency per delivery and bytes, by run (honest nodes only):",
        "",
        _row(["run", "nodes", "topic", "subscribers", "delivered", "p50 s", "p95 s", "p99 s",
              "max s", "bytes/node/bulletin"]),
        _row(["---"] * 10),
    ]
    for name, r in records.items():
        adv = r["adversaries"]
        assert isinstance(adv, Mapping)
        crowd = sum(int(v) for v in adv.values())
        nodes = f"{int(_get(r, 'nodes')):,}" + (f" + {crowd:,}" if crowd else "")
        for topic in ("public", "channel"):
            lines.append(_row([
                name, nodes, topic, f"{int(_get(r, topic, 'subscribers')):,}",
                f"{_get(r, topic, 'delivered'):.2%}",
                f"{_get(r, topic, 'p50'):.3f}", f"{_get(r, topic, 'p95'):.3f}",
                f"{_get(r, topic, 'p99'):.3f}", f"{_get(r, topic, 'max'):.3f}",
                f"{_get(r, topic, 'bytes_per_node'):,.0f}",
            ]))
    lines += [
        "",
        "What else each run did (simulated seconds; CPU is the simulator's own):",
        "",
        _row(["run", "last delivery s", "payloads", "segments lost", "DHT lookups",
              "mean lookup s", "dials (failed)", "peers dropped", "CPU s", "events"]),
        _row(["---"] * 10),
    ]
    for name, r in records.items():
        lines.append(_row([
            name, f"{_get(r, 'end'):.1f}", f"{int(_get(r, 'payloads')):,}",
            f"{int(_get(r, 'segments_lost')):,}", int(_get(r, "lookups")),
            f"{_get(r, 'lookup_mean'):.2f}",
            f"{int(_get(r, 'dials')):,} ({int(_get(r, 'failed_dials')):,})",
            f"{int(_get(r, 'drops')):,}", f"{_get(r, 'cpu_seconds'):.0f}",
            f"{int(_get(r, 'events')):,}",
        ]))
    extras = [(n, r["extra"]) for n, r in records.items() if r["extra"]]
    if extras:
        lines += ["", "Scenario details:", ""]
        for name, extra in extras:
            assert isinstance(extra, Mapping)
            lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in extra.items()))
    return "\n".join(lines)


def targets_table(found: Sequence[Target]) -> str:
    """The targets as a Markdown table."""
    lines = [_row(["target", "figure", "met"]), _row(["---"] * 3)]
    lines += [_row([t.name, t.figure, "yes" if t.met else "**no**"]) for t in found]
    return "\n".join(lines)


def plot(records: Mapping[str, Mapping[str, object]], folder: Path, stem: str) -> list[Path]:
    """PNG plots: how delivery, latency and bytes grow with N; the adversaries' runs
    beside their baseline. Needs matplotlib (``pip install -e '.[bench]'``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    sweep = sorted(
        (r for n, r in records.items() if n.startswith("sweep-")), key=lambda r: _get(r, "nodes")
    )
    if sweep:
        xs = [_get(r, "nodes") for r in sweep]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for topic, style in (("public", "-"), ("channel", "--")):
            for q, colour in (("p50", "C0"), ("p95", "C1"), ("p99", "C3")):
                axes[0].plot(xs, [_get(r, topic, q) for r in sweep], style, marker="o",
                             color=colour, label=f"{topic} {q}")
            axes[1].plot(xs, [100 * _get(r, topic, "delivered") for r in sweep], style,
                         marker="o", label=topic)
            axes[2].plot(xs, [_get(r, topic, "bytes_per_node") / 1000 for r in sweep], style,
                         marker="o", label=topic)
        titles = ("latency per delivery (s)", "delivered (%)", "kB sent per node per bulletin")
        for ax, title in zip(axes, titles, strict=True):
            ax.set_xscale("log")
            ax.set_xlabel("honest nodes (channel: min(N, 1,000) members)")
            ax.set_title(title)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        lowest = min(100 * _get(r, t, "delivered") for r in sweep for t in ("public", "channel"))
        axes[0].set_ylim(bottom=0)
        axes[1].set_ylim(min(95.0, lowest - 1.0), 100.5)
        axes[2].set_ylim(bottom=0)
        for ax in axes:
            ax.set_xticks(xs, [f"{int(x):,}" for x in xs])
            ax.minorticks_off()
        fig.suptitle(f"meshnode simulated, {_get(sweep[0], 'loss'):.0%} loss, "
                     "50-300 ms round trips")
        fig.tight_layout()
        path = folder / f"{stem}-scaling.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    kinds = ("churn", "silent", "flood", "eclipse", "mixed", "silent-churn")
    honest = [n for n in kinds if n in records]
    baseline = baseline_of(records, records[honest[0]]) if honest else None
    if honest and baseline is not None:
        names = ["baseline", *honest]
        runs = [baseline, *(records[n] for n in honest)]
        fig, ax = plt.subplots(figsize=(10, 4.2))
        width = 0.2
        for i, (topic, q) in enumerate(
            (("public", "p50"), ("public", "p99"), ("channel", "p50"), ("channel", "p99"))
        ):
            ax.bar([x + (i - 1.5) * width for x in range(len(runs))],
                   [_get(r, topic, q) for r in runs], width, label=f"{topic} {q}")
        ax.set_xticks(range(len(runs)), names)
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.05)
        ax.set_ylabel("seconds (log)")
        ax.set_title(f"honest latency per delivery, {int(_get(baseline, 'nodes')):,} honest nodes")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = folder / f"{stem}-adversaries.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
