"""The benchmark suite's plumbing: where a run writes, when it may publish, what it reports."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks import __main__ as runner
from benchmarks import _docs, callgrind
from benchmarks._harness import CaseResult, held

ROOT = Path(__file__).resolve().parent.parent


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    "argv",
    [["--quick", "--publish"], ["--only", "micro", "--publish"], ["--publish", "--out", "x"]],
)
def test_publish_refuses_anything_but_a_full_run(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        runner.main(argv)
    assert exit_.value.code == 2
    assert "--publish" in capsys.readouterr().err.splitlines()[-1]


def test_publish_refuses_a_dirty_tree(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runner, "uncommitted", lambda: ["flask_tenant_cache/hook.py"])
    with pytest.raises(SystemExit):
        runner.main(["--publish"])
    assert "clean tree" in capsys.readouterr().err


def test_a_partial_run_leaves_the_published_results_alone(tmp_path: Path) -> None:
    published = _digest(runner.PUBLISHED)
    assert runner.main(["--quick", "--only", "micro", "--out", str(tmp_path)]) == 0
    assert _digest(runner.PUBLISHED) == published
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["parts"] == ["micro"]
    assert {g["part"] for g in results["goals"]} == {"micro"}
    assert (tmp_path / "resolve.png").stat().st_size > 10_000
    # Only the figures of the parts that ran: no panel saying "not run".
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["resolve.png"]


def test_the_default_output_folder_is_ignored_by_git() -> None:
    env = {"date": "2026-12-01T20:00:00+00:00", "commit": "abc1234", "dirty": True}
    folder = runner.RUNS / runner._run_name(env)
    assert folder.parent == ROOT / "benchmarks" / "runs"
    assert folder.name == "2026-12-01T200000Z-abc1234-dirty"
    if not (ROOT / ".git").exists():
        pytest.skip("what git ignores is a property of the checkout, not of an unpacked sdist")
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(folder / "results.json")], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0


def _results(met: bool) -> dict[str, Any]:
    return {
        "environment": {
            "date": "2026-12-01T20:00:00+00:00",
            "python": "3.11.7",
            "implementation": "CPython",
            "cpus": 2,
            "machine": {"cpu": "Test CPU", "memory_gib": 8.0},
            "load_average": [1.0, 1.0, 1.0],
            "load_average_after": [1.5, 1.0, 1.0],
            "commit": "abc1234",
            "dirty": False,
            "packages": dict.fromkeys(
                ("flask", "werkzeug", "cachetools", "gunicorn", "redis"), "1"
            ),
        },
        "quick": False,
        "parts": ["coalescing"],
        "coalescing": {
            "elapsed_s": 1.0,
            "threads": 100,
            "loader_calls": [1],
            "wall_ms_median": 21.0,
            "ratio_to_single_load": 1.05,
            "stampedes": [],
        },
        "goals": [
            {"part": "coalescing", "goal": "one loader call", "measured": "1 call", "met": met}
        ],
        "elapsed_s": 1.0,
    }


@pytest.mark.parametrize(("met", "shown"), [(True, "met"), (False, "**missed**")])
def test_the_page_states_the_commit_and_each_computed_result(
    tmp_path: Path, met: bool, shown: str
) -> None:
    page = _docs.render(_results(met), tmp_path, ROOT / "docs" / "performance.rst")
    assert "at commit ``abc1234``" in page
    assert f"{int(met)} of 1 goals met" in page
    assert f"     - 1 call\n     - {shown}\n" in page
    assert "*The micro part was not in this run.*" in page
    assert "{{" not in page


def _counts(v1: int, v2: int, python: str = "3.11.7") -> dict[str, Any]:
    return {
        "over_bare": {"floor": 1000, "v1": v1, "v2": v2},
        "tenant_view": {"over_bare": {"floor": 1000, "v1": 2 * v1, "v2": 2 * v2}},
        "environment": {"python": python, "packages": {}, "commit": "abc1234"},
    }


def test_callgrind_check_fails_past_five_percent_growth() -> None:
    baseline = _counts(20_000, 10_000)
    assert callgrind.check(_counts(21_000, 10_500), baseline)["ok"]
    grown = callgrind.check(_counts(20_000, 10_501), baseline)
    assert not grown["ok"]
    assert grown["growth"]["v2"] == pytest.approx(0.0501)
    tenant_view_grown = _counts(20_000, 10_000)
    tenant_view_grown["tenant_view"]["over_bare"]["v1"] = 42_001  # 40,000 in the baseline
    found = callgrind.check(tenant_view_grown, baseline)
    assert not found["ok"]
    assert found["growth"] == pytest.approx(
        {"v1": 0, "v2": 0, "v1 (tenant view)": 0.05, "v2 (tenant view)": 0}, abs=1e-4
    )


def test_callgrind_check_fails_without_a_baseline_for_the_tenant_view() -> None:
    baseline = _counts(20_000, 10_000)
    del baseline["tenant_view"]
    found = callgrind.check(_counts(20_000, 10_000), baseline)
    assert not found["ok"]
    assert "no baseline for the tenant view" in found["summary"]


def test_callgrind_takes_an_app_over_bare_within_each_process() -> None:
    # Three processes of different memory layouts, each counting bare then an app: the app's
    # count over bare is the median of 50, 48 and 70, not the median app less the median bare.
    counts, over = callgrind.medians([[100, 150], [110, 158], [120, 190]])
    assert counts == [110, 158]
    assert over == [0, 50]


def test_callgrind_check_skips_another_python() -> None:
    found = callgrind.check(_counts(99_999, 99_999, "3.13.1"), _counts(1, 1))
    assert found["skipped"]
    assert "SKIPPED" in found["summary"]


def test_a_ratio_goal_needs_the_median_and_the_bests() -> None:
    case = CaseResult("v2", "", 1, [809.0], ratios={"base": 0.87}, best_ratios={"base": 2.46})
    assert not held(case, "base", 1.0)
    case.best_ratios["base"] = 0.95
    assert held(case, "base", 1.0)
    case.ratios["base"] = 1.01
    assert not held(case, "base", 1.0)


def test_a_part_that_failed_with_a_traceback_renders_as_valid_rst() -> None:
    error = 'RuntimeError: outer failed:\nTraceback (most recent call last):\n  File "x"\n'
    error += "RuntimeError: " + "y" * 200
    text = _docs._missing("scale", {"scale": {"error": error}})
    assert text is not None
    first, _, rest = text.partition("\n")
    # One inline literal, whole on its line: the traceback's last line...
    assert first.count("``") == 2
    assert first.endswith("y``")
    # ...then all of it as a literal block, wrapped to fit the page.
    assert rest.startswith("\n::\n\n")
    assert all(len(line) <= 3 + 88 for line in rest.splitlines())
    assert _docs._last_line(error) in first


def test_the_page_shows_the_instructions_per_http_request_over_bare() -> None:
    counts = {"ir_per_request": {"bare": 10, "floor": 11, "v1": 13, "v2": 12}}
    part = {
        **counts,
        "tenant_view": counts,
        "pieces": {"pieces": []},
        "http": {
            "server": "gunicorn, 1 sync worker",
            "ir_per_request": {"bare": 900_000, "v2": 912_500, "v1": 918_000},
            "over_bare": {"bare": 0, "v2": 12_000, "v1": 18_000},
        },
    }
    page = _docs._callgrind({"callgrind": part}, ROOT, ROOT)
    table = page[page.index("Instructions per HTTP request") :]
    # Over bare as taken within each layout (the medians'), not the difference of the medians.
    assert "   * - v2\n     - 912,500\n     - +12,000\n     - x1.013\n" in table
    assert "   * - v1\n     - 918,000\n     - +18,000\n     - x1.020\n" in table
