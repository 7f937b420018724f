"""A real modelyard gateway on 127.0.0.1 (random port), served by uvicorn in a background thread.

The app, config loading and HTTP server are the production ones (uvicorn with httptools); only
the local models are left out (``start_local_models=False`` and ``embedded_models: false``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import uvicorn

from modelyard.app import create_app
from modelyard.config.load import load_config


class GatewayServer:
    """Start with :meth:`start`, stop with :meth:`stop`; ``url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, config_text: str, environ: Mapping[str, str]) -> None:
        self.config = load_config(config_text, source="test-config.yaml", environ=environ)
        self.app = create_app(self.config, start_local_models=False)
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=0,
                loop="asyncio",
                http="httptools",
                ws="none",
                lifespan="on",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=2,
            )
        )
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayServer:
        self._thread = threading.Thread(target=self._server.run, name="modelyard-gateway", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start (see the log above)")
            time.sleep(0.005)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
