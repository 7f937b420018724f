"""Smart-routing decisions outside a gateway: build SmartRouting from a config file and decide.

Run as ``python -m tests.smart._decide CONFIG PROMPTS.json`` it prints one ``model reason`` line
per prompt (the cross-process determinism test compares that with an in-process run).
"""

from __future__ import annotations

import asyncio
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from modelyard.accounting.pricebook import PriceBook
from modelyard.config.load import load_config
from modelyard.providers.registry import Registry
from modelyard.redact import Redactor
from modelyard.routing.router import Router
from modelyard.routing.smart.decide import Decision
from modelyard.routing.smart.service import SmartRouting
from modelyard.store.sqlite import SqliteStore


@dataclass
class Ctx:
    """The parts of a RequestContext a decision reads and writes."""

    request_id: str = "req_test"
    headers: dict[str, str] = field(default_factory=dict)
    principal: Any = None
    route_name: str | None = None
    route_decision: Any = None
    route_reason: str | None = None
    local_only: bool = False


def build(config_path: Path, db: Path, seed: int = 0) -> tuple[SmartRouting, SqliteStore]:
    config = load_config(config_path.read_text(), source=str(config_path), environ={})
    registry = Registry(config, None, Redactor([]))  # type: ignore[arg-type]  # fake providers only
    router = Router(config, registry)
    prices = PriceBook(config)
    for group in router.groups():
        for dep in group.deployments:
            if dep.policy.local:
                prices.register_local(dep.label, dep.policy.hardware)
    store = SqliteStore(str(db))
    return SmartRouting(config, registry, router, prices, store, rng=random.Random(seed)), store


async def decide_all(smart: SmartRouting, route: str, prompts: list[str]) -> list[Decision]:
    out = []
    for index, prompt in enumerate(prompts):
        body = {"model": route, "messages": [{"role": "user", "content": prompt}]}
        out.append(await smart.decide(smart.routes[route], body, Ctx(request_id=f"req_{index}")))
    return out


async def _main(config_path: Path, prompts_path: Path) -> None:
    smart, store = build(config_path, config_path.parent / "decide-child.db")
    await store.open()
    try:
        prompts = orjson.loads(await asyncio.to_thread(prompts_path.read_bytes))
        for decision in await decide_all(smart, "auto", prompts):
            sys.stdout.write(f"{decision.model} {decision.reason} {decision.detail}\n")
    finally:
        await smart.aclose()
        await store.aclose()


if __name__ == "__main__":
    asyncio.run(_main(Path(sys.argv[1]), Path(sys.argv[2])))
