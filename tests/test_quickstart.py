"""The quickstart of README.md and docs/quickstart.rst, run exactly as they show it."""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_quickstart() -> tuple[str, str]:
    """The Python block and the console block of README.md's quickstart."""
    section = (ROOT / "README.md").read_text().split("## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    console = re.search(r"```console\n(.*?)```", section, re.S)
    assert code is not None
    assert console is not None
    return code.group(1), console.group(1)


def docs_quickstart() -> tuple[str, str]:
    """The first python and console code blocks of docs/quickstart.rst's "A minimal app"."""
    text = (ROOT / "docs" / "quickstart.rst").read_text().split("A minimal app\n", 1)[1]

    def block(language: str) -> str:
        body = text.split(f".. code-block:: {language}\n\n", 1)[1]
        lines = []
        for line in body.splitlines(keepends=True):
            if line.strip() and not line.startswith("    "):
                break
            lines.append(line)
        return textwrap.dedent("".join(lines))

    return block("python"), block("console")


def curl_examples(console: str) -> list[tuple[dict[str, str], str]]:
    """Each ``$ curl -H ... URL`` line with the output printed under it."""
    examples = []
    lines = console.strip().splitlines()
    for command, output in zip(lines[::2], lines[1::2], strict=True):
        words = shlex.split(command.lstrip("$ "), comments=True)
        assert words[0] == "curl"
        headers = dict(
            tuple(part.strip() for part in words[i + 1].split(":", 1))
            for i, word in enumerate(words)
            if word == "-H"
        )
        assert words[-1] == "http://127.0.0.1:5000/"
        examples.append((headers, output))
    return examples


@pytest.fixture
def load_quickstart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Write ``code`` to quickstart.py in an empty directory and import it, as ``flask --app
    quickstart`` does."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)

    def load(code: str) -> Any:
        (tmp_path / "quickstart.py").write_text(code)
        monkeypatch.delitem(__import__("sys").modules, "quickstart", raising=False)
        return importlib.import_module("quickstart")

    return load


@pytest.mark.parametrize("source", [readme_quickstart, docs_quickstart], ids=["README", "docs"])
def test_quickstart_works_as_written(load_quickstart: Any, source: Any) -> None:
    code, console = source()
    module = load_quickstart(code)
    client = module.app.test_client()
    examples = curl_examples(console)
    assert {next(iter(h)) for h, _ in examples} == {"X-Tenant-ID", "Host"}
    for headers, output in examples:
        response = client.get("/", headers=headers)
        assert response.get_data(as_text=True).strip() == output, headers
    assert client.get("/health").json == {"ok": True}


def test_quickstart_survives_a_second_start(load_quickstart: Any) -> None:
    code, console = readme_quickstart()
    load_quickstart(code)
    module = load_quickstart(code)  # the table and its tenant exist already
    headers, output = curl_examples(console)[0]
    assert module.app.test_client().get("/", headers=headers).get_data(as_text=True).strip() == (
        output
    )


def test_readme_and_docs_show_the_same_app() -> None:
    (readme, readme_console), (docs, docs_console) = readme_quickstart(), docs_quickstart()
    # The same code, whatever the line breaks (each page wraps it to its own width).
    assert ast.dump(ast.parse(readme)) == ast.dump(ast.parse(docs))
    assert readme_console.strip() == docs_console.strip()
