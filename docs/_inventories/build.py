"""Build ``NAME.inv`` here from a project's own documentation source: see README.rst."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", help="the intersphinx name in docs/conf.py, e.g. flask")
    parser.add_argument("source", type=Path, help="the project's Sphinx source directory")
    parser.add_argument(
        "--dirhtml",
        action="store_true",
        help="the published docs use Sphinx's dirhtml builder (page/#anchor URLs)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        # No conf.py (-C): the project's theme and extensions are not needed for an inventory;
        # autodoc imports the installed package, which must be the documented version.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sphinx",
                "-q",
                "-C",
                "-b",
                "dirhtml" if args.dirhtml else "html",
                "-D",
                "extensions=sphinx.ext.autodoc",
                "-D",
                "root_doc=index",
                str(args.source),
                out,
            ],
            check=False,  # unknown roles of the project's own extensions only cost warnings
            stderr=subprocess.DEVNULL,
        )
        shutil.copy(Path(out) / "objects.inv", HERE / f"{args.name}.inv")
    print(f"wrote {HERE / (args.name + '.inv')}")


if __name__ == "__main__":
    main()
