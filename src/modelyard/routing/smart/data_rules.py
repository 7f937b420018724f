"""Gateway-wide data rules (top-level ``rules:``): applied to every chat and embeddings request,
whichever model or route it names.

A route's own ``rules:`` only see requests that name the route; a team that must keep personal
or confidential data on its own hardware needs the rule to hold when a client names a cloud model
directly too. Top-level rules are therefore checked here for requests naming a model, and are
prepended to every route's rules (config/load.py) for requests naming a route.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

from modelyard.config.routes_schema import RuleConfig
from modelyard.errors import PermissionDeniedError
from modelyard.routing.group import ModelGroup
from modelyard.routing.smart import rules as rules_mod
from modelyard.routing.smart.rules import Restriction

INLINE_SCAN_CHARS = 4096
"""Bodies whose text is at most this long are scanned on the event loop (a few microseconds);
longer ones in the routing thread pool."""


def _scan(rules: Sequence[RuleConfig], body: dict[str, Any], facts: rules_mod.RequestFacts) -> Restriction:
    needs_text = any(r.when.pii for r in rules)
    text = rules_mod.request_text(body) if needs_text else ""
    return rules_mod.evaluate(rules, text, facts)


async def check_data_rules(
    rules: Sequence[RuleConfig],
    body: dict[str, Any],
    ctx: Any,
    group: Callable[[object], ModelGroup],
    pool: Executor,
    *,
    embeddings: bool = False,
) -> Restriction:
    """Apply the gateway-wide rules to a request that names a model (not a route).

    Raises PermissionDeniedError (403, code ``routing_rule``) when a rule blocks the request, a
    ``restrict`` rule does not allow the named model, or a ``local_only`` rule matches and the
    model has no local deployment. Otherwise sets ``ctx.local_only`` so that every attempt —
    retries, fallbacks, hedges, mid-stream failover, context summaries — stays on local
    deployments, and returns what matched.
    """
    facts = rules_mod.request_facts(body, ctx.headers, ctx.principal)
    if any(r.when.pii for r in rules) and _body_chars(body) > INLINE_SCAN_CHARS:
        restriction = await asyncio.get_running_loop().run_in_executor(pool, _scan, rules, body, facts)
    else:
        restriction = _scan(rules, body, facts)
    if not restriction.matched:
        return restriction
    names = ", ".join(restriction.matched)
    model = body.get("model")
    if restriction.blocked_by is not None:
        raise PermissionDeniedError(
            f"rule {restriction.blocked_by!r} blocks this request (matched: {names}); remove what "
            "the rule matches, or change the top-level `rules:` in the config",
            code="routing_rule",
        )
    if restriction.allowed is not None and model not in restriction.allowed:
        raise PermissionDeniedError(
            f"rules {names} allow only the models {', '.join(sorted(restriction.allowed))}, not "
            f"{model!r}; the request was not sent anywhere",
            code="routing_rule",
        )
    if restriction.local_only:
        served = group(model)  # an unknown model is the usual 404
        if not any(
            d.policy.local and (d.target.embeddings if embeddings else d.target.chat)
            for d in served.deployments
        ):
            raise PermissionDeniedError(
                f"rules {names} allow only local models, and {model!r} has no local deployment; "
                "the request was not sent anywhere. Name a local model (GET /v1/models) or a route "
                "with a local candidate, or remove what the rule matches",
                code="routing_rule",
            )
        ctx.local_only = True
    ctx.route_reason = "rule:" + ",".join(restriction.matched)
    return restriction


def _body_chars(body: dict[str, Any]) -> int:
    """A cheap upper bound of the text a scan reads (the message list's total string length)."""
    total = 0
    stack: list[Any] = [body.get("messages"), body.get("system"), body.get("input"), body.get("prompt")]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return total


__all__ = ["INLINE_SCAN_CHARS", "check_data_rules"]
