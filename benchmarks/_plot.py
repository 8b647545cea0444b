"""The plots of a run, one figure per file, each saying what, when, where and against what goal."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: the plots are files

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["FIGURES", "plot"]

#: One colour per thing measured, the same in every figure.
COLOURS = {
    "bare": "#8c8c8c",
    "floor": "#5aa469",
    "dict": "#bdbdbd",
    "base": "#c7a97a",
    "v1": "#e6862b",
    "v2": "#2b6fb3",
}
GOAL: dict[str, Any] = {"color": "#a00", "lw": 1.2, "ls": "--"}
#: Inches at 100 dpi: 900 px wide, shown at about 700 px in the docs, so 10 pt stays readable.
SIZE = (9.0, 5.0)
DPI = 100


def _colour(name: str) -> str:
    lowered = name.lower()
    for key in ("v1", "v2", "bare", "floor", "dict"):
        if key in lowered:
            return COLOURS[key]
    return COLOURS["base"]


def _footer(results: dict[str, Any]) -> str:
    """When, on what, from which commit: the line under every figure."""
    env = results["environment"]
    machine = env.get("machine", {})
    load = env["load_average"][0], env.get("load_average_after", [float("nan")])[0]
    commit = env.get("commit") or "unknown commit"
    return (
        f"{env['date'][:16].replace('T', ' ')} UTC, commit {commit}"
        f"{' + uncommitted changes' if env.get('dirty') else ''}"
        f"{', quick run' if results.get('quick') else ''}; {machine.get('cpu', '?')}, "
        f"{env['cpus']} shared CPUs, load {load[0]:.1f} -> {load[1]:.1f}; "
        f"Python {env['python']}"
    )


def _bars(
    ax: Axes, names: Sequence[str], values: Sequence[float], notes: Sequence[str], unit: str
) -> None:
    bars = ax.bar(range(len(names)), values, 0.7, color=[_colour(n) for n in names])
    ax.bar_label(bars, labels=list(notes), fontsize=9, padding=2)
    ax.set_xticks(range(len(names)), [n.replace(" ", "\n", 1) for n in names], fontsize=9)
    ax.set_ylabel(unit, fontsize=10)
    ax.margins(y=0.2)


def _requests(ax: Axes, part: dict[str, Any]) -> str:
    names, values, notes = [], [], []
    for view in part["views"].values():
        group = view["group"]
        bare = group["baseline"]
        for case in group["cases"]:
            names.append(case["name"])
            values.append(case["best_ns"] / 1e3)
            notes.append(f"{case['best_ns'] / 1e3:.1f}\nx{case['ratios'][bare]:.3f}")
    _bars(ax, names, values, notes, "µs per request (best round)")
    ax.set_title("A whole request through app.wsgi_app, x bare Flask (same rounds)")
    goals = ", ".join(f"{v['title']} at most x{v['goal_x']:.2f}" for v in part["views"].values())
    return f"Goals: {goals} bare (the ratios printed)"


def _resolve(ax: Axes, part: dict[str, Any]) -> str:
    group = part["groups"]["resolve"]
    cases = group["cases"]
    ref = part["lookup_reference"]
    _bars(
        ax,
        [c["name"] for c in cases],
        [c["best_ns"] for c in cases],
        [f"{c['best_ns']:.0f}\nx{c['ratios'][ref]:.2f}" for c in cases],
        "ns per call (best round)",
    )
    goal_ns = part["lookup_goal_ns"]
    ax.axhline(goal_ns, **GOAL, label=f"goal: {goal_ns:g} ns")
    ax.legend(fontsize=9, loc="upper left")
    ax.set_title(f"resolve() on a hit, x {ref} (same rounds)")
    return f"Goal: a hit at most {goal_ns:g} ns, held as at most x1.00 {ref}"


def _scale_lines(
    ax: Axes, part: dict[str, Any], value: Callable[[dict[str, Any]], float], kinds: Sequence[str]
) -> None:
    sizes = [s["tenants"] for s in part["sizes"]]
    for kind in kinds:
        ys = [value(s[kind]) for s in part["sizes"]]
        ax.plot(sizes, ys, marker="o", color=_colour(kind), label=kind)
        for x, y in zip(sizes, ys, strict=True):
            ax.annotate(f"{y:,.3g}", (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("cached tenants (3 aliases each)", fontsize=10)
    ax.legend(fontsize=9, loc="upper left")


def _per_operation(
    ax: Axes, part: dict[str, Any], field: str, goal: float, goal_label: str, ylabel: str
) -> None:
    """invalidate and stats of v1 and v2 by store size, log-log, with the goal's line."""
    sizes = [s["tenants"] for s in part["sizes"]]
    for op, style in (("invalidate", "-"), ("stats", ":")):
        for kind in ("v1", "v2"):
            ys = [s[kind][op][field] for s in part["sizes"]]
            label = f"{kind} {'invalidate one tenant' if op == 'invalidate' else 'stats()'}"
            ax.plot(sizes, ys, ls=style, marker="o", color=_colour(kind), label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(goal, **GOAL, label=goal_label)
    ax.set_xlabel("cached tenants (3 aliases each)", fontsize=10)
    ax.set_ylabel(ylabel, fontsize=10)


def _scale_ops(ax: Axes, part: dict[str, Any]) -> str:
    _per_operation(ax, part, "us_median", 100, "goal at 1M: 100 µs", "µs per call (median)")
    ax.legend(fontsize=9, loc="upper left")
    ax.set_title("invalidate() of one tenant and stats(), by store size")
    return "Goal: each under 100 µs at 1M tenants"


def _scale_wait(ax: Axes, part: dict[str, Any]) -> str:
    _per_operation(
        ax,
        part,
        "reader_wait_ms_median",
        1.0,
        "goal at 1M: 1 ms",
        "ms, longest lookup during the call (median)",
    )
    sizes = [s["tenants"] for s in part["sizes"]]
    idle = [max(s[k]["reader_wait_idle_ms"] for k in ("v1", "v2")) for s in part["sizes"]]
    ax.plot(sizes, idle, color=COLOURS["bare"], marker=".", label="no operation (noise floor)")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("How long a concurrent reader waits during invalidate() and stats()")
    return "Goal: no reader waits over 1 ms at 1M tenants"


def _scale_hit(ax: Axes, part: dict[str, Any]) -> str:
    _scale_lines(ax, part, lambda d: d["hit_ns"], ("dict", "v1", "v2"))
    sizes = [s["tenants"] for s in part["sizes"]]
    through = [s["dict"]["identifier_hit_ns"] for s in part["sizes"]]
    ax.plot(sizes, through, ls=":", marker=".", color=_colour("dict"), label="dict, by identifier")
    ax.legend(fontsize=9, loc="upper left")
    ax.set_ylabel("ns per hit (best round, random tenants)", fontsize=10)
    ax.set_title("resolve() on a hit by store size, against dict.get")
    return "Goal: the hit at 1M tenants within 2x the hit at 1k"


def _scale_memory(ax: Axes, part: dict[str, Any]) -> str:
    _scale_lines(ax, part, lambda d: d["bytes_per_tenant"], ("dict", "v1", "v2"))
    sizes = [s["tenants"] for s in part["sizes"]]
    goal = [1.5 * s["dict"]["bytes_per_tenant"] for s in part["sizes"]]
    ax.plot(sizes, goal, **GOAL, label="goal: 1.5x dict")
    ax.legend(fontsize=9, loc="upper left")
    ax.set_ylabel("bytes per tenant, Tenant objects included (RSS)", fontsize=10)
    ax.set_title("Memory per tenant as stored (every alias), against a plain dict of them")
    return "Goal: at most 1.5x a plain dict of the same tenants by every alias"


def _http_throughput(ax: Axes, part: dict[str, Any]) -> str:
    names, values, notes = [], [], []
    for config, data in part["configs"].items():
        for app, figures in data["apps"].items():
            sat = figures["saturation"]
            names.append(f"{config} {app}")
            values.append(sat["throughput"])
            ratio = sat.get("ratio_to_bare")
            spread = sat.get("ratios_per_round")
            note = f"{sat['throughput']:.0f}"
            if ratio is not None:
                note += f"\nx{ratio:.3f}"
            if spread:
                note += f"\n[{min(spread):.2f}-{max(spread):.2f}]"
            notes.append(note)
    _bars(ax, names, values, notes, "requests / s (median round)")
    ax.set_title("Saturation throughput under gunicorn, x bare (same rounds) [range]")
    return "Goal: v2 at least x0.95 bare in each server configuration"


def _invalidation(ax: Axes, part: dict[str, Any]) -> str:
    inv = part["invalidation"]
    keys = ("p50", "p99", "max")
    values = [inv.get(f"delay_ms_{k}", 0.0) for k in keys]
    _bars(ax, list(keys), values, [f"{v:.2f}" for v in values], "ms, A's invalidate() to B's drop")
    ax.axhline(10.0, **GOAL, label="p99 goal: 10 ms")
    ax.legend(fontsize=9, loc="upper left")
    ax.set_title(f"Pub/sub invalidation across 2 processes ({inv['rounds']} rounds)")
    return f"Goal: p99 under 10 ms, none lost ({inv['lost']} lost)"


Figure_ = tuple[str, str, Callable[[Axes, dict[str, Any]], str]]
#: (file stem, part, drawing function returning its goal line).
FIGURES: tuple[Figure_, ...] = (
    ("requests", "requests", _requests),
    ("resolve", "micro", _resolve),
    ("scale-operations", "scale", _scale_ops),
    ("scale-reader-wait", "scale", _scale_wait),
    ("scale-hit", "scale", _scale_hit),
    ("scale-memory", "scale", _scale_memory),
    ("http-throughput", "http", _http_throughput),
    ("invalidation", "cluster", _invalidation),
)


def plot(results: dict[str, Any], directory: Path) -> list[Path]:
    """One PNG per figure of :data:`FIGURES` whose part ran without error; their paths."""
    written = []
    for stem, part_name, draw in FIGURES:
        part = results.get(part_name)
        if part is None or "error" in part:
            continue
        fig: Figure = plt.figure(figsize=SIZE, dpi=DPI)
        ax = fig.add_subplot()
        try:
            goal = draw(ax, part)
        except KeyError:
            plt.close(fig)
            continue  # a results file written before this figure existed
        ax.title.set_fontsize(11)
        ax.tick_params(labelsize=9)
        fig.text(0.01, 0.035, goal, fontsize=9, color="#a00")
        fig.text(0.01, 0.005, _footer(results), fontsize=8, color="#444")
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        path = directory / f"{stem}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks._plot RESULTS.json``: redraw the figures beside a results file."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m benchmarks._plot RESULTS.json", file=sys.stderr)
        return 2
    source = Path(args[0])
    for path in plot(json.loads(source.read_text()), source.parent):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
