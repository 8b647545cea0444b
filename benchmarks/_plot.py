"""The plot of a run: HTTP latency and throughput, in-process requests, hits, bus and memory."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: the plot is a file

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

__all__ = ["plot"]

#: One colour per thing measured, the same in every panel.
COLOURS = {
    "bare": "#8c8c8c",
    "hook": "#bdbdbd",
    "base": "#c7a97a",
    "v1": "#e6862b",
    "v2": "#2b6fb3",
}
SHADES = {"p50": 1.0, "p95": 0.7, "p99": 0.45}


def _colour(name: str) -> str:
    lowered = name.lower()
    for key in ("v1", "v2", "bare", "hook"):
        if key in lowered:
            return COLOURS[key]
    return COLOURS["base"]


def _missing(ax: Axes, title: str, why: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="#a00")
    ax.set_xticks([])
    ax.set_yticks([])


def _part(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    part: dict[str, Any] | None = results.get(name)
    return None if part is None or "error" in part else part


def _label(ax: Axes, bars: Any, fmt: str) -> None:
    ax.bar_label(bars, labels=[fmt.format(b.get_height()) for b in bars], fontsize=7, padding=1)


def _http_latency(ax: Axes, http: dict[str, Any]) -> None:
    names: list[str] = []
    x = 0.0
    for config, data in http["configs"].items():
        for app in ("bare", "v1", "v2"):
            lat = data["apps"][app]["fixed_rate"]["latency_ms"]
            for i, (p, alpha) in enumerate(SHADES.items()):
                bar = ax.bar(x + (i - 1) * 0.27, lat[p], 0.27, color=_colour(app), alpha=alpha)
                _label(ax, bar, "{:.1f}")
            names.append(f"{config}\n{app}")
            x += 1
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("ms from the due time (log scale)")
    ax.axhline(5.0, color="#a00", lw=0.8, ls="--", label="p95 goal: 5 ms")
    rate = http["settings"]["rate"]
    ax.set_title(f"HTTP latency at {rate:g} req/s: p50 / p95 / p99 bars", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")


def _http_throughput(ax: Axes, http: dict[str, Any]) -> None:
    names: list[str] = []
    x = 0
    for config, data in http["configs"].items():
        for app in ("bare", "v1", "v2"):
            sat = data["apps"][app]["saturation"]
            bar = ax.bar(x, sat["throughput"], 0.8, color=_colour(app))
            ratio = sat.get("ratio_to_bare")
            ax.bar_label(
                bar,
                labels=[f"{sat['throughput']:.0f}" + ("" if ratio is None else f"\nx{ratio:.2f}")],
                fontsize=7,
            )
            names.append(f"{config}\n{app}")
            x += 1
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("requests / s")
    ax.margins(y=0.2)
    ax.set_title("Saturation throughput under gunicorn (x bare, same rounds)", fontsize=10)


def _group_bars(
    ax: Axes, cases: Sequence[dict[str, Any]], scale: float, fmt: str, ratio_to: str
) -> None:
    names = [c["name"] for c in cases]
    best = [c["best_ns"] / scale for c in cases]
    median = [c["median_ns"] / scale for c in cases]
    ax.bar(range(len(cases)), best, 0.7, color=[_colour(n) for n in names], label="best")
    ax.scatter(range(len(cases)), median, color="k", marker="_", s=200, label="median", zorder=3)
    for i, case in enumerate(cases):
        ax.annotate(
            f"{fmt.format(best[i])}\nx{case['ratios'][ratio_to]:.2f}",
            (i, max(best[i], median[i])),
            xytext=(0, 5),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    labels = [n.replace(".get", "\n.get").replace(" ", "\n", 1) for n in names]
    ax.set_xticks(range(len(cases)), labels, fontsize=7)
    ax.margins(y=0.25)
    ax.legend(fontsize=7, loc="upper left")


def _requests(ax: Axes, requests: dict[str, Any]) -> None:
    _group_bars(ax, requests["group"]["cases"], 1e3, "{:.1f}", "bare Flask")
    ax.set_ylabel("µs per request (bars: best round)")
    ax.set_title("In-process request via app.wsgi_app (x bare, same rounds)", fontsize=10)


def _resolve(ax: Axes, micro: dict[str, Any]) -> None:
    cases = micro["groups"]["resolve"]["cases"]
    _group_bars(ax, cases, 1.0, "{:,.0f}", "LRUCache.get+lock")
    ax.axhline(3000, color="#a00", lw=0.8, ls="--", label="goal: 3 µs")
    lru = next(c for c in cases if c["name"] == "LRUCache.get+lock")
    ax.axhline(3 * lru["best_ns"], color="#a00", lw=0.8, ls=":", label="goal: 3x LRUCache + lock")
    ax.set_ylabel("ns per call (bars: best round)")
    ax.set_title("resolve() on a hit (x LRUCache.get + lock, same rounds)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")


def _invalidation(ax: Axes, cluster: dict[str, Any]) -> None:
    inv = cluster["invalidation"]
    if "delay_ms_p50" not in inv:
        _missing(ax, "Invalidation delay", "every message was lost")
        return
    keys = ("p50", "p99", "max")
    bars = ax.bar(keys, [inv[f"delay_ms_{k}"] for k in keys], 0.6, color=COLOURS["v2"])
    _label(ax, bars, "{:.2f}")
    ax.axhline(10.0, color="#a00", lw=0.8, ls="--", label="p99 goal: 10 ms")
    ax.set_ylabel("ms, A's invalidate() to B's drop")
    ax.set_title(
        f"Pub/sub invalidation across 2 processes ({inv['rounds']} rounds, {inv['lost']} lost)",
        fontsize=10,
    )
    ax.margins(y=0.2)
    ax.legend(fontsize=7, loc="upper left")


def _memory(ax: Axes, memory: dict[str, Any]) -> None:
    kinds = list(memory["cases"])
    for i, (key, label, alpha) in enumerate(
        (("rss_per_tenant", "RSS", 1.0), ("traced_per_tenant", "tracemalloc", 0.5))
    ):
        values = [memory["cases"][k][key] for k in kinds]
        xs = [j + (i - 0.5) * 0.38 for j in range(len(kinds))]
        bars = ax.bar(xs, values, 0.38, color=[_colour(k) for k in kinds], alpha=alpha)
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=7)
        bars.set_label(label)
    ax.set_xticks(range(len(kinds)), kinds, fontsize=8)
    ax.set_ylabel("bytes per cached tenant")
    ax.set_title(f"Memory, {memory['tenants']:,} tenants (solid RSS, pale traced)", fontsize=10)
    ax.margins(y=0.2)


Panel = tuple[str, str, Callable[[Axes, dict[str, Any]], None]]
PANELS: tuple[Panel, ...] = (
    ("http", "HTTP latency", _http_latency),
    ("http", "Saturation throughput", _http_throughput),
    ("requests", "In-process request", _requests),
    ("micro", "resolve() on a hit", _resolve),
    ("cluster", "Invalidation delay", _invalidation),
    ("memory", "Memory", _memory),
)


def plot(results: dict[str, Any], path: Path) -> None:
    """Draw every panel of :data:`PANELS` from ``results`` into the PNG file ``path``."""
    fig, axes = plt.subplots(3, 2, figsize=(13, 14))
    for ax, (part, title, draw) in zip(axes.flat, PANELS, strict=True):
        data = _part(results, part)
        if data is None:
            why = "failed in this run" if part in results else "not run in this run"
            _missing(ax, title, f"{part}: {why}")
        else:
            draw(ax, data)
        ax.tick_params(axis="y", labelsize=8)
    env = results["environment"]
    load = env["load_average"][0], env.get("load_average_after", [float("nan")])[0]
    fig.suptitle(
        f"flask-tenant-cache benchmarks, {env['date']}{' (quick)' if results['quick'] else ''}: "
        f"{env['cpus']} shared CPUs, load {load[0]:.2f} -> {load[1]:.2f}, "
        f"{results['elapsed_s']:.0f} s; grey bare, orange v1, blue v2",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks._plot [RESULTS.json]``: redraw the plot of a results file."""
    args = sys.argv[1:] if argv is None else argv
    source = Path(args[0]) if args else Path(__file__).parent / "results" / "latest.json"
    plot(json.loads(source.read_text()), source.with_suffix(".png"))
    print(source.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
