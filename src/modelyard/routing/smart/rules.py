"""Data-governance rules: personal-data detectors, tags, metadata, team and key conditions.

Rules look at *every* piece of text a request carries, in either API's shape — system prompts,
message text, text blocks of multimodal messages, tool calls' arguments and tool results —
because a rule that misses a tool result is no rule. Pure functions, no I/O: the decision runs
them in its executor, off the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelyard.config.routes_schema import RuleConfig

MAX_SCAN_CHARS = 2_000_000
"""Text scanned per request (the body size limit bounds it anyway); beyond it the request is
treated as matching every PII rule: an unscanned request cannot be declared clean."""

_BINARY_KEYS = frozenset({"file_data", "signature"})

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b")
_PHONE = re.compile(
    # international: +<country code> then digits in groups
    r"(?<![\w+])\+\d{1,3}(?:[\s.-]?\(?\d{1,5}\)?){2,6}(?![\w])"
    # North American: (415) 555-0132, 415-555-0132, 415.555.0132, 415 555 0132
    r"|(?<![\w(])(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w])"
    # national with a trunk 0: 07700 900123, 030 1234 5678, 020-7183-8750
    r"|(?<![\w])0\d{2,4}[\s.-]?\d{3,4}[\s.-]?\d{3,4}(?![\w])"
)
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a card number (digits only)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """ISO 13616 mod-97 check of an IBAN (spaces allowed)."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def _has_phone(text: str) -> bool:
    for match in _PHONE.finditer(text):
        digits = sum(c.isdigit() for c in match.group(0))
        if 9 <= digits <= 15:
            return True
    return False


def _has_card(text: str) -> bool:
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group(0))
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            return True
    return False


def _has_iban(text: str) -> bool:
    return any(iban_ok(m.group(0)) for m in _IBAN.finditer(text))


DETECTORS: dict[str, Callable[[str], bool]] = {
    "email": lambda text: _EMAIL.search(text) is not None,
    "phone": _has_phone,
    "card": _has_card,
    "iban": _has_iban,
    "ssn": lambda text: _SSN.search(text) is not None,
}
"""PII kind → detector over a text."""


def detect_pii(text: str, kinds: Sequence[str] | None = None) -> set[str]:
    """The kinds of personal data found in ``text`` (among ``kinds``, default all)."""
    return {kind for kind in (kinds or DETECTORS) if DETECTORS[kind](text)}


def iter_texts(value: Any) -> Iterator[str]:
    """Every string in a request body (either API), dict keys included (tool arguments are
    free-form), except binary payloads: base64 ``data`` of images/documents/audio, ``data:`` URIs,
    ``file_data`` and thinking ``signature`` (digit runs in base64 would look like card numbers)."""
    if isinstance(value, str):
        if not value.startswith("data:"):
            yield value
    elif isinstance(value, Mapping):
        binary = value.get("type") == "base64" or "format" in value
        for k, v in value.items():
            if k in _BINARY_KEYS or (binary and k == "data"):
                continue
            if isinstance(k, str):
                yield k
            yield from iter_texts(v)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from iter_texts(item)


def request_text(body: Mapping[str, Any]) -> str:
    """All text of the request joined (for the PII scan), capped at MAX_SCAN_CHARS + 1."""
    parts: list[str] = []
    size = 0
    for text in iter_texts(body):
        parts.append(text)
        size += len(text) + 1
        if size > MAX_SCAN_CHARS:
            break
    return "\n".join(parts)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def prompt_text(body: Mapping[str, Any], limit: int = 2000) -> str:
    """What the request asks: its last user message's text (for task classification and the
    learned router), at most ``limit`` characters."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                text = _content_text(message.get("content"))
                if text.strip():
                    return text[:limit]
    prompt = body.get("prompt") or body.get("input")
    if isinstance(prompt, str):
        return prompt[:limit]
    return ""


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What rules look at besides the text: the request's tags and metadata, the caller's key."""

    tags: frozenset[str] = frozenset()
    metadata: Mapping[str, str] | None = None
    team: str | None = None
    key_ids: frozenset[str] = frozenset()
    """The calling key's id and name."""


def request_facts(body: Mapping[str, Any], headers: Mapping[str, str], principal: Any) -> RequestFacts:
    """Tags (header ``x-modelyard-tags``, ``metadata.tags``, the key's tags), metadata (the
    request's ``metadata`` over the key's), team and key of one request."""
    tags: set[str] = set()
    header = headers.get("x-modelyard-tags")
    if header:
        tags.update(t.strip() for t in header.split(",") if t.strip())
    metadata: dict[str, str] = {}
    key = getattr(principal, "key", None)
    if key is not None:
        tags.update(getattr(key, "tags", ()) or ())
        for k, v in (getattr(key, "metadata", None) or {}).items():
            metadata[str(k)] = str(v)
    raw = body.get("metadata")
    if isinstance(raw, Mapping):
        for k, v in raw.items():
            metadata[str(k)] = v if isinstance(v, str) else str(v)
        request_tags = raw.get("tags")
        if isinstance(request_tags, str):
            tags.update(t.strip() for t in request_tags.split(",") if t.strip())
        elif isinstance(request_tags, list):
            tags.update(str(t) for t in request_tags)
    ids = frozenset(str(x) for x in (getattr(key, "id", None), getattr(key, "name", None)) if x)
    return RequestFacts(frozenset(tags), metadata, getattr(key, "team_id", None), ids)


@dataclass(frozen=True, slots=True)
class Restriction:
    """What the matching rules allow."""

    local_only: bool = False
    allowed: frozenset[str] | None = None
    """Model names still allowed by ``restrict`` rules (None: any)."""
    blocked_by: str | None = None
    matched: tuple[str, ...] = ()
    """Names of the rules that matched, with what matched (``personal-data(email)``)."""


def rule_name(rule: RuleConfig, index: int) -> str:
    return rule.name or f"rule{index}"


def evaluate(rules: Sequence[RuleConfig], text: str, facts: RequestFacts) -> Restriction:
    """Apply every rule; all that match restrict together (the tightest wins)."""
    local_only = False
    allowed: frozenset[str] | None = None
    blocked: str | None = None
    matched: list[str] = []
    scanned_all = len(text) <= MAX_SCAN_CHARS
    for index, rule in enumerate(rules):
        when = rule.when
        found: list[str] = []
        if when.pii:
            kinds = set(when.pii) if not scanned_all else detect_pii(text, when.pii)
            if not kinds:
                continue
            found.append(",".join(sorted(kinds)))
        if when.tags:
            hit = sorted(facts.tags.intersection(when.tags))
            if not hit:
                continue
            found.append("tag:" + ",".join(hit))
        if when.metadata:
            meta = facts.metadata or {}
            if any(meta.get(k) != v for k, v in when.metadata.items()):
                continue
            found.append("metadata")
        if when.team:
            if facts.team not in when.team:
                continue
            found.append(f"team:{facts.team}")
        if when.key:
            if not facts.key_ids.intersection(when.key):
                continue
            found.append("key")
        name = rule_name(rule, index)
        matched.append(f"{name}({';'.join(found)})")
        if rule.action == "local_only":
            local_only = True
        elif rule.action == "restrict":
            models = frozenset(rule.models)
            allowed = models if allowed is None else allowed & models
        elif blocked is None:
            blocked = name
    return Restriction(local_only, allowed, blocked, tuple(matched))


__all__ = [
    "DETECTORS",
    "RequestFacts",
    "Restriction",
    "detect_pii",
    "evaluate",
    "iban_ok",
    "iter_texts",
    "luhn_ok",
    "prompt_text",
    "request_facts",
    "request_text",
    "rule_name",
]
