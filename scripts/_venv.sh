# Sourced by the scripts: make the virtual environment (once) and keep it in step with setup.cfg.
# VENV (default .venv), PYTHON (default python3), EXTRAS (default dev) and CONSTRAINTS (a pip
# constraints file, e.g. requirements/minimum.txt) choose which environment; CI sets them.
set -eu
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-dev}
CONSTRAINTS=${CONSTRAINTS:-}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
stamp=$VENV/.installed-$(
  { cat setup.cfg pyproject.toml; echo "$EXTRAS"; [ -z "$CONSTRAINTS" ] || cat "$CONSTRAINTS"; } |
    cksum | cut -d' ' -f1
)
if [ ! -f "$stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet ${CONSTRAINTS:+--constraint "$CONSTRAINTS"} \
    -e ".[$EXTRAS]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
