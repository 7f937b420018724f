"""The ``modelyard`` command line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from modelyard import __version__

app = typer.Typer(
    name="modelyard",
    help="modelyard: an AI gateway. OpenAI- and Anthropic-compatible; local and cloud models as one fleet.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config file (default: $MODELYARD_CONFIG, else zero config).",
        show_default=False,
    ),
]
GatewayURL = Annotated[
    str, typer.Option("--url", envvar="MODELYARD_URL", help="Base URL of a running gateway.")
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="MODELYARD_API_KEY",
        help="API key for the gateway, if it needs one.",
        show_default=False,
    ),
]


def _load(config: Path | None):  # type: ignore[no-untyped-def]
    from modelyard.config import load_config_file
    from modelyard.errors import ConfigError

    try:
        return load_config_file(config)
    except ConfigError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[
        str | None,
        typer.Option(help="Interface to bind [default: server.host, 127.0.0.1].", show_default=False),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port [default: server.port, 4000].", show_default=False)
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Gateway processes sharing the port (each loads its own local models).")
    ] = 1,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the gateway. With no config it serves the embedded local chat and embedding models."""
    import uvicorn

    from modelyard.app import create_app
    from modelyard.telemetry.multiproc import multiprocess_metrics_dir

    runtime = _load(config)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The access log writes one line per request: skip the caller lookups nobody reads.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    bind_host = host or runtime.server.host
    bind_port = port or runtime.server.port
    typer.secho(
        f"modelyard {__version__} on http://{bind_host}:{bind_port}  ({runtime.source})", fg="green", err=True
    )
    typer.echo(f"models: {', '.join(runtime.model_names())}", err=True)
    options: dict[str, object] = {}
    if workers > 1:
        # Each worker process builds its own app from the same file (uvicorn needs an import path).
        if config is not None:
            os.environ["MODELYARD_CONFIG"] = str(config.resolve())
        target: object = "modelyard.app:create_app_from_env"
        options = {"factory": True, "workers": workers}
    else:
        target = create_app(runtime)
    # Several workers share their metrics through a per-run directory, set before they start.
    with multiprocess_metrics_dir(workers):
        uvicorn.run(
            target,  # type: ignore[arg-type]
            **options,  # type: ignore[arg-type]
            host=bind_host,
            port=bind_port,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level=log_level,
            lifespan="on",
            proxy_headers=False,
            timeout_graceful_shutdown=30,
        )


@app.command("check-config")
def check_config(
    file: Annotated[Path, typer.Argument(help="The YAML config file to check.")],
) -> None:
    """Validate a config file; print every problem with its line, or a summary of what it serves."""
    runtime = _load(file)
    typer.secho(f"{file}: OK", fg="green")
    for model in runtime.models:
        deps = ", ".join(
            f"{d.provider}:{getattr(d, 'model', None) or getattr(d, 'path', None) or 'embedded'}"
            for d in model.deployments
        )
        aliases = f" (aliases: {', '.join(model.aliases)})" if model.aliases else ""
        typer.echo(f"  {model.name}{aliases} -> {deps}")
    for name, route in runtime.routes.items():  # smart routes (docs/smart-routing.md)
        tasks = ", ".join(f"{t}->{c.model or '?'}" for t, c in route.tasks.items()) or "none"
        typer.echo(
            f"  route {name} -> {', '.join(route.candidates) or 'every chat model'} "
            f"(quality_target {route.quality_target:g}; tasks: {tasks}; rules: {len(route.rules)})"
        )


@app.command()
def models(
    url: GatewayURL = "http://127.0.0.1:4000",
    key: KeyOption = None,
    state: Annotated[
        bool,
        typer.Option(
            "--state", help="Show each deployment's live state (in flight, queue, latency, breaker)."
        ),
    ] = False,
) -> None:
    """List the models a running gateway serves."""
    import httpx

    if state:
        _show_state(url, key)
        return
    try:
        resp = httpx.get(url.rstrip("/") + "/v1/models", headers=_auth(key), timeout=10)
    except httpx.HTTPError as exc:
        typer.secho(f"cannot reach {url}: {exc}; is `modelyard serve` running?", fg="red", err=True)
        raise typer.Exit(1) from None
    if resp.status_code != 200:
        typer.secho(f"{resp.status_code}: {resp.text}", fg="red", err=True)
        raise typer.Exit(1)
    for entry in resp.json()["data"]:
        typer.echo(f"{entry['id']:<32} {entry.get('owned_by', '')}")


def _show_state(url: str, key: str | None) -> None:
    import httpx
    from rich.console import Console
    from rich.table import Table

    try:
        resp = httpx.get(url.rstrip("/") + "/admin/deployments", headers=_auth(key), timeout=10)
    except httpx.HTTPError as exc:
        typer.secho(f"cannot reach {url}: {exc}; is `modelyard serve` running?", fg="red", err=True)
        raise typer.Exit(1) from None
    if resp.status_code != 200:
        typer.secho(f"{resp.status_code}: {resp.text}", fg="red", err=True)
        raise typer.Exit(1)
    table = Table(
        "model", "deployment", "prio", "in flight", "queued", "EWMA ms", "breaker", "served", "failed"
    )
    for group in resp.json()["models"]:
        for dep in group["deployments"]:
            limit = dep["max_concurrency"]
            table.add_row(
                group["model"],
                dep["deployment"],
                str(dep["priority"]),
                f"{dep['in_flight']}/{limit if limit is not None else '∞'}",
                str(dep["queued"]),
                "-" if dep["ewma_latency_ms"] is None else f"{dep['ewma_latency_ms']:.1f}",
                dep["breaker"],
                str(dep["served"]),
                str(dep["failures"]),
            )
    Console().print(table)


def _auth(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


@app.command()
def chat(
    model: Annotated[str, typer.Option("--model", "-m", help="Model to talk to.")] = "local",
    url: GatewayURL = "http://127.0.0.1:4000",
    key: KeyOption = None,
    system: Annotated[str | None, typer.Option(help="System prompt.", show_default=False)] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 512,
) -> None:
    """Chat in the terminal through a running gateway (streamed). /reset clears, /quit or Ctrl-D exits."""
    from modelyard.chat_repl import run_chat

    sys.exit(run_chat(url=url, key=key, model=model, system=system, max_tokens=max_tokens))


def _register_admin_commands() -> None:
    from modelyard.cli_admin import keys_app, spend
    from modelyard.cli_router import router_app
    from modelyard.cli_top import top
    from modelyard.conversations.cli import conversations_app

    app.add_typer(keys_app, name="keys")
    app.add_typer(router_app, name="router")
    app.add_typer(conversations_app, name="conversations")
    app.command("spend")(spend)
    app.command("top")(top)


_register_admin_commands()


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()
