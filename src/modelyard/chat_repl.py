"""The interactive terminal chat behind ``modelyard chat``: streams answers over the OpenAI API."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from rich.console import Console


def _stream_answer(client: httpx.Client, url: str, body: dict[str, Any], console: Console) -> str:
    answer: list[str] = []
    with client.stream("POST", url, content=orjson.dumps(body)) as resp:
        if resp.status_code != 200:
            resp.read()
            try:
                message = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = resp.text
            console.print(f"[red]error {resp.status_code}: {message}[/red]")
            return ""
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            chunk = orjson.loads(data)
            if "error" in chunk:
                console.print(f"\n[red]stream failed: {chunk['error'].get('message')}[/red]")
                break
            for choice in chunk.get("choices", []):
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    answer.append(piece)
                    console.print(piece, end="", markup=False, highlight=False)
    console.print()
    return "".join(answer)


def run_chat(*, url: str, key: str | None, model: str, system: str | None, max_tokens: int) -> int:
    console = Console()
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    history: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    endpoint = url.rstrip("/") + "/v1/chat/completions"
    console.print(f"[bold]modelyard chat[/bold] with [cyan]{model}[/cyan] at {url} — /reset, /quit")
    with httpx.Client(headers=headers, timeout=httpx.Timeout(600, connect=5)) as client:
        while True:
            try:
                text = console.input("[bold green]you>[/bold green] ").strip()
            except (EOFError, KeyboardInterrupt):
                console.print()
                return 0
            if not text:
                continue
            if text in ("/quit", "/exit"):
                return 0
            if text == "/reset":
                history = history[:1] if system else []
                console.print("[dim]history cleared[/dim]")
                continue
            history.append({"role": "user", "content": text})
            console.print(f"[bold cyan]{model}>[/bold cyan] ", end="")
            try:
                answer = _stream_answer(
                    client,
                    endpoint,
                    {"model": model, "messages": history, "stream": True, "max_tokens": max_tokens},
                    console,
                )
            except httpx.HTTPError as exc:
                console.print(f"[red]cannot reach {url}: {exc}; is `modelyard serve` running?[/red]")
                history.pop()
                continue
            if answer:
                history.append({"role": "assistant", "content": answer})
            else:
                history.pop()
