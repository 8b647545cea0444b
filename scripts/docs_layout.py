"""Render every built docs page in headless Chromium at desktop and phone width, and check fit."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

#: (name, width, height): a 1280 px laptop screen and a 390 px phone.
VIEWPORTS = [("desktop", 1280, 800), ("phone", 390, 844)]
# Quiet, offline chromium: no sandbox (CI runs as root), no GPU, no calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# What does not fit, as messages; run in the page.
MEASURE = """(viewport) => {
  const problems = [];
  const page = document.documentElement;
  if (page.scrollWidth > page.clientWidth + 1) {
    // Name the outermost element that sticks out, so the message says what to fix.
    const scrolls = (el) => {
      for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
        if (getComputedStyle(up).overflowX !== "visible") return true;
      }
      return false;
    };
    const culprit = [...document.querySelectorAll("body *")].find(
      (el) => el.getBoundingClientRect().right > page.clientWidth + 1 && !scrolls(el));
    const what = culprit
      ? ` (${culprit.tagName.toLowerCase()}.${[...culprit.classList].join(".")}: ` +
        `${JSON.stringify(culprit.textContent.trim().slice(0, 50))})`
      : "";
    problems.push(`the page is ${page.scrollWidth}px wide, wider than the screen${what}`);
  }
  for (const img of document.querySelectorAll("div.body img")) {
    const shown = img.getBoundingClientRect().width;
    if (img.naturalWidth > shown * 1.05 && !img.closest("a")) {
      problems.push(`${img.getAttribute("src")} is shrunk to ${Math.round(shown)}px ` +
                    `of ${img.naturalWidth}px with no link to its full size`);
    }
  }
  if (viewport === "desktop") {
    for (const pre of document.querySelectorAll("div.body pre")) {
      if (pre.scrollWidth > pre.clientWidth + 1) {
        const line = pre.textContent.split("\\n").reduce((a, b) => (b.length > a.length ? b : a));
        problems.push(`a code line is cut at 1280px: ${JSON.stringify(line.trim().slice(0, 60))}`);
      }
    }
  }
  return problems;
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("html", type=Path, help="the built HTML docs (sphinx -b html)")
    parser.add_argument("screenshots", type=Path, help="where to write the PNGs")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    pages = sorted(
        p for p in args.html.glob("*.html") if p.name not in {"genindex.html", "search.html"}
    )
    args.screenshots.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        for name, width, height in VIEWPORTS:
            page = browser.new_page(viewport={"width": width, "height": height})
            for path in pages:
                page.goto(path.resolve().as_uri())
                page.wait_for_load_state("load")
                page.screenshot(path=args.screenshots / f"{path.stem}-{name}.png", full_page=True)
                for problem in page.evaluate(MEASURE, name):
                    problems.append(f"{path.name} ({name}, {width}px): {problem}")
            page.close()
        browser.close()
    for problem in problems:
        print(f"docs layout: {problem}", file=sys.stderr)
    print(
        f"docs layout: {len(pages)} pages at {len(VIEWPORTS)} widths, screenshots in "
        f"{args.screenshots}, {len(problems)} problems"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
