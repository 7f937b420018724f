"""Security rows through real processes: E2 (no string-built SQL), E5 (path confusion), C7
(revocation reaches every process), D6 (graceful shutdown drains streams and keeps their rows)."""

from __future__ import annotations

import ast
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, gateway_process

MASTER = "mk-sec-7d1e0b"
CONFIG = """\
embedded_models: false
cloud_models_from_env: false
storage: {{database: "sqlite:///{db}"}}
models:
  - name: echo
    deployments: [{{provider: fake, model: echo}}]
  - name: slow
    deployments: [{{provider: fake, model: slow-1500}}]
"""
SRC = Path(__file__).resolve().parents[2] / "src" / "modelyard"


# Validated identifiers, module-level SQL constants (UPPER_CASE) and placeholder variables.
IDENTIFIER_NAMES = re.compile(
    r"^(_?[A-Z][A-Z0-9_]*|_?t_\w+|\w*_cols|s|p|source|schema|table\w*|cols?|columns?|where|order|group\w*"
    r"|\w*_select|\w*_insert|clause\w*|\w*_sql)$"
)


def _interpolation_is_identifier(node: ast.expr) -> bool:
    """Names of validated identifiers and SQL fragments built from constants, never values."""
    if isinstance(node, ast.Name):
        return bool(IDENTIFIER_NAMES.match(node.id))
    if isinstance(node, ast.Attribute):
        return bool(IDENTIFIER_NAMES.match(node.attr))
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        return name in ("join", "_placeholders", "placeholders", "check_identifier", "len", "param", "p")
    return False


def test_no_sql_is_built_with_string_formatting() -> None:
    """E2's lint: values reach SQL only as bound parameters. An f-string holding SQL may interpolate
    validated identifiers (schema, table, column lists, placeholder lists) and nothing else; SQL
    built with % or .format() is banned outright."""
    keyword = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|WHERE|VALUES)\b", re.IGNORECASE)
    offenders = []
    for path in (SRC / "store").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):
                text = "".join(
                    v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
                )
                if keyword.search(text):
                    for value in node.values:
                        if isinstance(value, ast.FormattedValue) and not _interpolation_is_identifier(
                            value.value
                        ):
                            offenders.append(f"{path.name}:{node.lineno}: {ast.unparse(value.value)}")
            elif (
                isinstance(node, ast.BinOp)
                and isinstance(node.op, ast.Mod)
                and isinstance(node.left, ast.Constant)
            ):
                if isinstance(node.left.value, str) and keyword.search(node.left.value):
                    offenders.append(f"{path.name}:{node.lineno}: % formatting")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "format"
                and isinstance(node.func.value, ast.Constant)
                and keyword.search(str(node.func.value.value))
            ):
                offenders.append(f"{path.name}:{node.lineno}: .format()")
    assert offenders == []


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    work = tmp_path_factory.mktemp("sec")
    db = work / "db.sqlite"
    with gateway_process(work, CONFIG.format(db=db), env={"MODELYARD_MASTER_KEY": MASTER}) as (url, _log):
        yield url, db


@pytest.mark.parametrize(
    "path",
    [
        "/admin/keys",
        "//admin/keys",
        "/admin//keys",
        "/admin/./keys",
        "/x/../admin/keys",
        "/admin/%6Beys",
        "/%61dmin/keys",
        "/ADMIN/keys",
        "/admin/keys/",
        "/admin/keys?x=1",
        "/admin/keys%2F",
    ],
)
@pytest.mark.parametrize("host", ["127.0.0.1", "evil.example", "localhost:1"])
def test_admin_is_never_reachable_without_a_key(gw: tuple[str, Path], path: str, host: str) -> None:
    """E5: whatever the path spelling or Host header, no admin data without an admin key."""
    url, _ = gw
    response = httpx.get(url + path, headers={"host": host}, timeout=10)
    assert response.status_code in (400, 401, 404), (path, host, response.status_code)
    assert b'"data"' not in response.content


def test_revocation_reaches_a_second_process_within_five_seconds(tmp_path: Path) -> None:
    """C7: two gateway processes on one database; revoke through one, the other refuses ≤ 5 s."""
    db = tmp_path / "shared.db"
    config = CONFIG.format(db=db)
    with (
        gateway_process(
            tmp_path / "a" if (tmp_path / "a").mkdir() is None else tmp_path,
            config,
            env={"MODELYARD_MASTER_KEY": MASTER},
        ) as (url_a, _),
        gateway_process(
            tmp_path / "b" if (tmp_path / "b").mkdir() is None else tmp_path,
            config,
            env={"MODELYARD_MASTER_KEY": MASTER},
        ) as (url_b, _),
    ):
        admin = {"authorization": f"Bearer {MASTER}"}
        created = httpx.post(url_a + "/admin/keys", headers=admin, json={"name": "c7"}, timeout=10).json()
        key = {"authorization": f"Bearer {created['key']}"}
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        assert (
            httpx.post(url_b + "/v1/chat/completions", headers=key, json=body, timeout=10).status_code == 200
        )
        httpx.post(
            url_a + f"/admin/keys/{created['id']}/revoke", headers=admin, timeout=10
        ).raise_for_status()
        revoked_at = time.monotonic()
        while (
            httpx.post(url_b + "/v1/chat/completions", headers=key, json=body, timeout=10).status_code == 200
        ):
            assert time.monotonic() - revoked_at < 5.0, "process B still accepts a key revoked 5 s ago"
            time.sleep(0.1)


def test_sigterm_drains_streams_and_keeps_their_rows(tmp_path: Path) -> None:
    """D6: streams shorter than the drain window finish after SIGTERM; every one has its row."""
    db = tmp_path / "drain.db"
    (tmp_path / "c.yaml").write_text(CONFIG.format(db=db))
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelyard",
            "serve",
            "--config",
            str(tmp_path / "c.yaml"),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        results: list[bytes] = []

        def stream() -> None:
            with httpx.stream(
                "POST",
                url + "/v1/chat/completions",
                timeout=30,
                json={"model": "slow", "stream": True, "messages": [{"role": "user", "content": "a b c"}]},
            ) as r:
                results.append(b"".join(r.iter_raw()))

        threads = [threading.Thread(target=stream) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.5)  # all eight are waiting on the 1.5 s upstream
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=30)
        assert proc.wait(timeout=40) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it drained on
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(results) == 8 and all(r.endswith(b"data: [DONE]\n\n") for r in results)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT count(*) FROM ledger WHERE status = 'ok'").fetchone()[0]
    assert rows == 8
