"""Starting a real gateway process on a free loopback port, for tests that need one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

CLEARED_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MODELYARD_CONFIG", "MODELYARD_MASTER_KEY")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def gateway_process(
    workdir: Path,
    config_text: str | None = None,
    *,
    env: dict[str, str] | None = None,
    ready_timeout: float = 120,
) -> Iterator[tuple[str, Path]]:
    """Run ``python -m modelyard serve`` until the block ends; yields (base URL, log file)."""
    with gateway_subprocess(workdir, config_text, env=env, ready_timeout=ready_timeout) as (_, url, log):
        yield url, log


@contextmanager
def gateway_subprocess(
    workdir: Path,
    config_text: str | None = None,
    *,
    env: dict[str, str] | None = None,
    ready_timeout: float = 120,
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """:func:`gateway_process`, yielding the process too (for tests that kill it)."""
    port = free_port()
    args = [sys.executable, "-m", "modelyard", "serve", "--port", str(port)]
    if config_text is not None:
        config = workdir / "modelyard.yaml"
        config.write_text(config_text)
        args += ["--config", str(config)]
    proc_env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV} | (env or {})
    log = workdir / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=proc_env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not become ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield proc, url, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
