"""A one-line-per-request access log (plain text; the JSON request log replaces it when configured)."""

from __future__ import annotations

import logging

from modelyard.telemetry.record import RequestRecord

log = logging.getLogger("modelyard.access")


class AccessLog:
    def emit(self, record: RequestRecord) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info(
                "%s %s %s %d %s %.2fms",
                record.request_id,
                record.method,
                record.path,
                record.status,
                record.deployment or "-",
                record.overhead_ms,
            )
