"""``docs/performance.rst`` from a full run: the template's prose, the run's tables and goals.

Every figure, and every "met" or "missed", comes from the results file; nothing is typed by
hand. ``python -m benchmarks._docs RESULTS.json`` rewrites the page from a results file.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._plot import FIGURES

__all__ = ["render", "write_page"]

TEMPLATE = Path(__file__).with_name("_performance_template.rst")
PLACEHOLDER = re.compile(r"^\{\{ (\w+) \}\}$", re.M)


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An RST list-table."""
    lines = [f".. list-table:: {title}" if title else ".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        # A cell is one line: a failed part's measure is its error, which may span lines.
        cells = [" ".join(str(cell).split()) for cell in row]
        lines.append(f"   * - {cells[0]}")
        lines += [f"     - {cell}" for cell in cells[1:]]
    return "\n".join(lines) + "\n"


def _figures(part: str, published: Path, page: Path) -> str:
    """The figures of ``part`` that exist in ``published``, each linked to its full size."""
    out = []
    for stem, figure_part, _ in FIGURES:
        path = published / f"{stem}.png"
        if figure_part != part or not path.exists():
            continue
        rel = Path("..") / path.resolve().relative_to(page.resolve().parent.parent)
        out.append(
            f".. figure:: {rel.as_posix()}\n"
            f"   :width: 100%\n"
            f"   :target: _images/{stem}.png\n"
            f"   :alt: {stem.replace('-', ' ')}\n\n"
            f"   Full size: click the figure.\n"
        )
    return "\n".join(out)


def _last_line(text: str) -> str:
    """An inline literal holds one line: of a traceback, its last."""
    lines = str(text).strip().splitlines()
    return lines[-1] if lines else ""


def _missing(part: str, results: dict[str, Any]) -> str | None:
    data = results.get(part)
    if data is None:
        return f"*The {part} part was not in this run.*\n"
    if "error" in data:
        # A traceback spans lines: its last line inline, the whole of it as a literal block,
        # wrapped to fit the page.
        error = str(data["error"]).rstrip() or "unknown error"
        lines = [
            wrapped
            for line in error.splitlines()
            for wrapped in textwrap.wrap(line, 88, subsequent_indent="    ") or [""]
        ]
        block = "\n".join("   " + line if line else "" for line in lines)
        return f"*The {part} part failed in this run:* ``{_last_line(error)}``\n\n::\n\n{block}\n"
    return None


def _run(results: dict[str, Any], _published: Path, _page: Path) -> str:
    env = results["environment"]
    machine = env.get("machine", {})
    pk = env["packages"]
    before = ", ".join(f"{x:.2f}" for x in env["load_average"])
    after = ", ".join(f"{x:.2f}" for x in env.get("load_average_after", []))
    parts = ", ".join(f"{p} {results[p]['elapsed_s']:.0f} s" for p in results["parts"])
    dirty = " **with uncommitted changes**" if env.get("dirty") else ""
    return (
        f"Run on **{env['date'][:10]}** at {env['date'][11:16]} UTC, at commit "
        f"``{env['commit']}``{dirty}{' (quick run)' if results['quick'] else ''}, on "
        f"{machine.get('cpu', 'an unknown CPU')} with **{env['cpus']} CPUs shared** with other "
        f"work and {machine.get('memory_gib', '?')} GiB of memory. Load average (1, 5, 15 "
        f"minutes) {before} before the run and {after} after. {env['implementation']} "
        f"{env['python']}, Flask {pk['flask']}, Werkzeug {pk['werkzeug']}, cachetools "
        f"{pk['cachetools']}, gunicorn {pk['gunicorn']}, redis-py {pk['redis']}. The full run "
        f"took **{results['elapsed_s']:.0f} s** ({parts}).\n"
    )


def _goals(results: dict[str, Any], _published: Path, _page: Path) -> str:
    goals = results["goals"]
    met = sum(g["met"] for g in goals)
    rows = [
        [g["part"], g["goal"], g["measured"], "met" if g["met"] else "**missed**"] for g in goals
    ]
    return f"{met} of {len(goals)} goals met.\n\n" + _table(
        "", ["part", "goal", "measured", "result"], rows
    )


def _group_rows(group: dict[str, Any], scale: float, unit: str) -> list[list[str]]:
    refs = group["references"]
    return [
        [
            c["name"],
            *(f"{c['ratios'][r]:.3f}" for r in refs),
            f"{c['best_ns'] / scale:,.{1 if unit == 'µs' else 0}f} {unit}",
            f"{c['median_ns'] / scale:,.{1 if unit == 'µs' else 0}f} {unit}",
        ]
        for c in group["cases"]
    ]


def _group_table(group: dict[str, Any], scale: float, unit: str) -> str:
    header = ["case", *(f"x {r}" for r in group["references"]), "best", "median"]
    title = f"{group['title']} ({len(group['cases'][0]['samples_ns'])} interleaved rounds)"
    return _table(title, header, _group_rows(group, scale, unit))


def _micro(results: dict[str, Any], published: Path, page: Path) -> str:
    groups = results["micro"]["groups"]
    return "\n".join(
        [
            _figures("micro", published, page),
            _group_table(groups["resolve"], 1.0, "ns"),
            _group_table(groups["identifiers"], 1.0, "ns"),
        ]
    )


def _requests(results: dict[str, Any], published: Path, page: Path) -> str:
    views = results["requests"]["views"].values()
    return "\n".join(
        [_figures("requests", published, page)]
        + [_group_table(v["group"], 1e3, "µs") for v in views]
    )


def _scale(results: dict[str, Any], published: Path, page: Path) -> str:
    part = results["scale"]
    out = [_figures("scale", published, page)]
    for version in ("v1", "v2"):
        rows = []
        for size in part["sizes"]:
            d = size[version]

            def wait(op: str, d: dict[str, Any] = d) -> str:
                return f"{d[op]['reader_wait_ms_median']:.3f} / {d[op]['reader_wait_ms_max']:.3f}"

            rows.append(
                [
                    f"{size['tenants']:,}",
                    f"{d['hit_ns']:,.0f} ({size['dict']['hit_ns']:,.0f}; "
                    f"{size['dict']['identifier_hit_ns']:,.0f})",
                    f"{d['invalidate']['us_median']:,.1f}",
                    wait("invalidate"),
                    f"{d['stats']['us_median']:,.1f}",
                    wait("stats"),
                    f"{d['invalidate_all']['us_median'] / 1e3:,.2f}",
                    f"{d['bytes_per_tenant']:,.0f} ({size['dict']['bytes_per_tenant']:,.0f})",
                    f"{d['memory_x_dict']:.2f}",
                ]
            )
        out.append(
            _table(
                f"{version} by store size (medians; reader waits: median / max of the longest)",
                [
                    "tenants",
                    "hit ns (dict; by identifier)",
                    "invalidate one µs",
                    "reader wait ms",
                    "stats() µs",
                    "reader wait ms",
                    "invalidate_all() ms",
                    "B/tenant (dict)",
                    "x dict",
                ],
                rows,
            )
        )
    return "\n".join(out)


def _coalescing(results: dict[str, Any], published: Path, page: Path) -> str:
    part = results["coalescing"]
    rows = [
        [
            f"{part['threads']} threads, one cold tenant (v2)",
            f"{part['loader_calls']}",
            f"{part['wall_ms_median']:.1f} ms, x{part['ratio_to_single_load']:.2f} one load",
        ]
    ]
    for s in part.get("stampedes", []):
        rows.append(
            [
                f"{s['threads']} threads over {s['tenants']:,} cold tenants ({s['resolver']})",
                f"{s['loader_calls']:,} for {s['tenants']:,} tenants, {s['errors']} errors",
                f"{s['wall_ms']:,.0f} ms, x{s['ratio_to_ideal']:.2f} the ideal",
            ]
        )
    return _table("Stampedes", ["stampede", "loader calls", "wall time"], rows)


def _cluster(results: dict[str, Any], published: Path, page: Path) -> str:
    part = results["cluster"]
    inv = part["invalidation"]
    rows = [
        [
            f"in-process, {part['in_process']['threads']} threads ({v})",
            f"{part['in_process'][v]['queries']}",
            f"{part['in_process'][v]['wall_ms_median']:.0f} ms",
        ]
        for v in ("v2", "v1")
    ]
    rows += [
        [
            f"{c['requests']} requests on {c['workers']} gunicorn workers ({c['version']})",
            f"{c['queries']}",
            f"L2 hits {c['l2_hits']}, failed {c['failed']}",
        ]
        for c in part["cluster"]
    ]
    rows.append(
        [
            f"invalidation delay, 2 processes ({inv['rounds']} rounds, {inv['lost']} lost)",
            "--",
            f"p50 {inv.get('delay_ms_p50')} ms, p99 {inv.get('delay_ms_p99')} ms",
        ]
    )
    return "\n".join(
        [
            _figures("cluster", published, page),
            _table("Cold stampedes and invalidation", ["case", "queries", "figure"], rows),
        ]
    )


def _http(results: dict[str, Any], published: Path, page: Path) -> str:
    part = results["http"]
    rows = []
    for config, data in part["configs"].items():
        for app, f in data["apps"].items():
            lat, sat = f["fixed_rate"]["latency_ms"], f["saturation"]
            per_round = sat.get("ratios_per_round") or []
            spread = f"{min(per_round):.2f}-{max(per_round):.2f}" if per_round else "--"
            cpu = sat.get("server_cpu_us_per_request")
            rows.append(
                [
                    f"{config}, {app}",
                    *(f"{lat[k]:.2f}" for k in ("p50", "p95", "p99")),
                    f"{sat['throughput']:.0f}",
                    f"{sat.get('ratio_to_bare', 1.0):.3f} ({spread})",
                    "--" if cpu is None else f"{cpu:.0f}",
                    f"{sat.get('server_cpu_ratio_to_bare') or 1.0:.3f}",
                ]
            )
    return "\n".join(
        [
            _figures("http", published, page),
            _table(
                "Over HTTP (latency in ms from the due time; saturation x bare: median "
                "(range) of the rounds)",
                [
                    "server, app",
                    "p50",
                    "p95",
                    "p99",
                    "saturation req/s",
                    "x bare",
                    "server CPU µs/req",
                    "CPU x bare",
                ],
                rows,
            ),
        ]
    )


def _callgrind(results: dict[str, Any], published: Path, page: Path) -> str:
    part = results["callgrind"]
    rows = [
        [f"{app}, {view}", f"{ir:,}", f"{ir - counted['ir_per_request']['bare']:+,}"]
        for view, counted in (("string view", part), ("tenant view", part["tenant_view"]))
        for app, ir in counted["ir_per_request"].items()
    ]
    out = [_table("Instructions per request (callgrind Ir)", ["app", "Ir", "over bare"], rows)]
    if "check" in part:
        out.append(f"Against the committed baseline: {part['check']['summary']}\n")
    pieces = [[p["piece"], f"{p['ir']:,}", p["what"]] for p in part["pieces"]["pieces"]]
    out.append(_table("Pieces of a v2 request (callgrind Ir)", ["piece", "Ir", "what"], pieces))
    if "http" in part:  # results of runs before it was counted have no such table
        http = part["http"]
        bare = http["ir_per_request"]["bare"]
        rows = [
            [
                name,
                f"{ir:,}",
                f"{http['over_bare'][name]:+,}",
                f"x{1 + http['over_bare'][name] / bare:.3f}",
            ]
            for name, ir in http["ir_per_request"].items()
        ]
        title = f"Instructions per HTTP request ({http['server']}; callgrind Ir)"
        out.append(_table(title, ["app", "Ir", "over bare", "x bare"], rows))
    return "\n".join(out)


def _part_goals(part: str) -> Section:
    """A part without tables of its own here: its goals, with their figures."""

    def section(results: dict[str, Any], _published: Path, _page: Path) -> str:
        rows = [
            [g["goal"], g["measured"], "met" if g["met"] else "**missed**"]
            for g in results["goals"]
            if g["part"] == part
        ]
        note = "Every figure of the part is in ``benchmarks/results/results.json``.\n\n"
        return note + _table("", ["goal", "measured", "result"], rows)

    return section


Section = Callable[[dict[str, Any], Path, Path], str]
SECTIONS: dict[str, tuple[str | None, Section]] = {
    "RUN": (None, _run),
    "GOALS": (None, _goals),
    "MICRO": ("micro", _micro),
    "REQUESTS": ("requests", _requests),
    "SCALE": ("scale", _scale),
    "IDENTIFICATION": ("identification", _part_goals("identification")),
    "COALESCING": ("coalescing", _coalescing),
    "CLUSTER": ("cluster", _cluster),
    "HTTP": ("http", _http),
    "CALLGRIND": ("callgrind", _callgrind),
    "CONTROL": ("control", _part_goals("control")),
}


def render(results: dict[str, Any], published: Path, page: Path) -> str:
    """The page: the template with each ``{{ NAME }}`` line replaced by its section."""

    def section(match: re.Match[str]) -> str:
        part, build = SECTIONS[match.group(1)]
        missing = _missing(part, results) if part else None
        return (missing or build(results, published, page)).rstrip("\n")

    return PLACEHOLDER.sub(section, TEMPLATE.read_text())


def write_page(results: dict[str, Any], published: Path, page: Path) -> None:
    """Write :func:`render`'s page to ``page``."""
    page.write_text(render(results, published, page))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m benchmarks._docs RESULTS.json [PAGE.rst]", file=sys.stderr)
        return 2
    source = Path(args[0])
    page = Path(args[1]) if len(args) > 1 else Path(__file__).parent.parent / "docs/performance.rst"
    write_page(json.loads(source.read_text()), source.parent, page)
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
