"""Saturation load from ``wrk``, a compiled generator, so Python's own CPU does not decide it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ._http_client import Target
from ._loadgen import SaturationResult

__all__ = ["ensure_wrk", "run_wrk"]

#: Rotates the tenants over the requests of each wrk thread. Connections are kept alive: with
#: ``Connection: close`` gunicorn's sync workers served a third as many requests here, which
#: measures connection set-up rather than the app; enough connections (see ``http_load``)
#: keep gthread's accept imbalance from deciding the figure instead.
_SCRIPT = """
local slugs = {%(slugs)s}
local i = 0
request = function()
  i = i + 1
  local headers = {["%(header)s"] = slugs[(i %% #slugs) + 1]}
  return wrk.format("GET", "%(path)s", headers)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"max_us": %%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def ensure_wrk() -> str:
    """The path of ``wrk``, installed from Debian's packages when missing and root."""
    found = shutil.which("wrk")
    if found is not None:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "wrk"]
        if subprocess.run(install, env=env, capture_output=True, check=False).returncode:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
            subprocess.run(install, env=env, capture_output=True, check=False)
        found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk not found: apt-get install wrk (Debian) or your system's package")
    return found


def run_wrk(
    target: Target, tenants: Sequence[str], *, connections: int, duration: float
) -> SaturationResult:
    """``connections`` connections flat out for ``duration`` seconds, one wrk thread."""
    slugs = ", ".join(json.dumps(s) for s in tenants)
    script = _SCRIPT % {"slugs": slugs, "header": target.header, "path": target.path}
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        lua = Path(tmp) / "tenants.lua"
        lua.write_text(script)
        url = f"http://{target.host}:{target.port}{target.path}"
        cmd = [ensure_wrk(), "-t1", f"-c{connections}", f"-d{duration:g}s", "-s", str(lua), url]
        done = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=duration + 30
        )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-1000:]}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    ok = max(0, data["requests"] - data["status"] - data["timeout"])
    return SaturationResult(
        duration_s=duration,
        connections=connections,
        ok=ok,
        errors=errors,
        elapsed_s=data["duration_us"] / 1e6,
        connections_opened=data["requests"],
        latency_ms={
            "p50": data["p50_us"] / 1e3,
            "p99": data["p99_us"] / 1e3,
            "max": data["max_us"] / 1e3,
        },
    )
