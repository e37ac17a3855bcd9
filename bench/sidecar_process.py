"""A sidecar in its own process, pinned to the last core, for the benchmarks.

The benches measure the model server on the other cores; pinning the sidecar
(with one torch thread) keeps the two from competing for a core, as they would
sit on separate cores in production.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sidecar(port: int, env: dict[str, str], wait: bool = True) -> subprocess.Popen:
    """``latentwatch serve`` on 127.0.0.1:``port`` with ``env`` added to the environment.

    ``wait``: return once it listens (raise if it says anything else first);
    otherwise return at once (a capture client reconnects when it listens)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    cmd = [sys.executable, "-m", "latentwatch.cli", "serve", "--listen", f"127.0.0.1:{port}"]
    if sys.platform.startswith("linux") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", str(os.cpu_count() - 1), *cmd]
    if not wait:
        return subprocess.Popen(cmd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if "listening" not in line:
        proc.kill()
        raise RuntimeError(f"the sidecar did not start: {line!r}")
    return proc
