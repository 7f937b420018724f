"""The dashboard at ``/ui`` (server-rendered HTML, inline SVG, no external assets) and the
request-log admin API (``GET /admin/requests``)."""

from modelyard.dashboard.routes import serve_ui

__all__ = ["serve_ui"]
