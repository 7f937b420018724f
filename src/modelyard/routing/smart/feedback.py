"""``POST /v1/feedback``: a score on an earlier request, stored and learned from.

Body: ``request_id`` (the ``x-request-id`` of the answer), ``score`` (a number in 0..1) or
``thumbs`` (``"up"`` = 1, ``"down"`` = 0), optional ``comment`` (text) and ``metadata`` (an
object). A key may only judge its own requests (admins: any); another key's request answers 404,
exactly like an unknown id, so ids cannot be probed. A second feedback on the same request
replaces the first (and the bandit's count is corrected, not doubled).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from modelyard.errors import InvalidRequestError, NotFoundError
from modelyard.routing.smart.service import SmartRouting
from modelyard.store._feedback_sql import FeedbackRow
from modelyard.store.base import Role, Store
from modelyard.store.requestlog import Visibility

MAX_COMMENT_CHARS = 4000
MAX_METADATA_BYTES = 16384
MAX_REQUEST_ID_CHARS = 200


def parse_feedback(body: dict[str, Any]) -> tuple[str, float, str | None, str | None, dict[str, Any]]:
    """(request_id, score, thumbs, comment, metadata) of a feedback body; 400 naming the field."""
    unknown = sorted(set(body) - {"request_id", "score", "thumbs", "comment", "metadata"})
    if unknown:
        raise InvalidRequestError(
            f"unknown field(s) {', '.join(unknown)}; feedback takes request_id, score or thumbs, "
            "comment, metadata",
            param=unknown[0],
        )
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id or len(request_id) > MAX_REQUEST_ID_CHARS:
        raise InvalidRequestError(
            "'request_id' must be the id of an earlier request (its x-request-id header)", param="request_id"
        )
    score = body.get("score")
    thumbs = body.get("thumbs")
    if (score is None) == (thumbs is None):
        raise InvalidRequestError(
            "give exactly one of 'score' (a number from 0 to 1) or 'thumbs' ('up' or 'down')", param="score"
        )
    if thumbs is not None:
        if thumbs not in ("up", "down"):
            raise InvalidRequestError("'thumbs' must be 'up' or 'down'", param="thumbs")
        value = 1.0 if thumbs == "up" else 0.0
    else:
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise InvalidRequestError(f"'score' must be a number from 0 to 1, not {score!r}", param="score")
        value = float(score)
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS):
        raise InvalidRequestError(
            f"'comment' must be text of at most {MAX_COMMENT_CHARS} characters", param="comment"
        )
    metadata = body.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or len(orjson.dumps(metadata)) > MAX_METADATA_BYTES:
        raise InvalidRequestError(
            f"'metadata' must be a JSON object of at most {MAX_METADATA_BYTES} bytes", param="metadata"
        )
    return request_id, value, thumbs, comment, metadata


async def submit_feedback(
    smart: SmartRouting, store: Store, principal: Any, body: dict[str, Any]
) -> dict[str, Any]:
    """Store the feedback and teach the deciding route's bandit; returns the answer body."""
    request_id, score, thumbs, comment, metadata = parse_feedback(body)
    key_id = getattr(principal, "key_id", None)
    admin = getattr(principal, "role", None) is Role.ADMIN
    decision = await smart.lookup(request_id)
    not_found = NotFoundError(
        f"no request {request_id!r} that this key may give feedback on; use the x-request-id of "
        "one of its own answers",
    )
    if decision is not None:
        if not admin and decision.key_id != key_id:
            raise not_found
    else:
        visibility = Visibility() if admin else Visibility(key_id=key_id)
        if await store.request_by_id(request_id, visibility) is None:
            raise not_found
    previous = await store.feedback(request_id=request_id)
    row = FeedbackRow(
        request_id,
        time.time(),
        key_id,
        score,
        thumbs,
        comment,
        metadata,
        decision.route if decision else None,
        decision.model if decision else None,
        decision.task if decision else None,
        decision.reason if decision else None,
    )
    await store.put_feedback(row)
    learned = smart.learn(row, previous[0] if previous else None)
    answer: dict[str, Any] = {
        "object": "feedback",
        "request_id": request_id,
        "score": score,
        "replaced": bool(previous),
        "learned": learned,
    }
    if decision is not None:
        answer["route"] = decision.route
        answer["model"] = decision.model
        answer["task"] = decision.task or None
    return answer


__all__ = ["parse_feedback", "submit_feedback"]
