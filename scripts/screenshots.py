#!/usr/bin/env python3
"""Screenshots of every dashboard page, for docs/dashboard.md.

Starts a gateway process (fake priced models, a temp SQLite database), sends it a mix of real
traffic, logs in through the form with headless Chromium and saves one PNG per page in docs/img/.

  .venv/bin/python scripts/screenshots.py          # needs: apt-get install chromium chromium-driver
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.dashboard import webdriver  # noqa: E402
from tests.dashboard.traffic import MASTER, config_text, serve_traffic  # noqa: E402
from tests.support import gateway_process  # noqa: E402

OUT = ROOT / "docs" / "img"


def main() -> int:
    if not webdriver.available():
        sys.stderr.write(webdriver.HOWTO + "\n")
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with gateway_process(work, config_text(work / "db.sqlite"), env={"MODELYARD_MASTER_KEY": MASTER}) as (
            url,
            _log,
        ):
            traffic = serve_traffic(url, rounds=12)
            with webdriver.Browser() as browser:
                browser.get(url + "/ui/login")
                browser.screenshot(OUT / "dashboard-login.png")
                browser.type("#key", MASTER)
                browser.click("#login")
                browser.wait_for_url("/ui")
                pages = {
                    "dashboard-overview.png": "/ui?range=15m",
                    "dashboard-models.png": "/ui/models?range=15m",
                    "dashboard-routing.png": "/ui/routing?range=15m",
                    "dashboard-spend.png": "/ui/spend?range=15m",
                    "dashboard-requests.png": "/ui/requests?range=15m",
                    "dashboard-request-detail.png": f"/ui/requests/{traffic.xss_request_id}",
                    "dashboard-cache.png": "/ui/cache?range=15m",
                }
                for name, path in pages.items():
                    browser.get(url + path)
                    browser.full_page_screenshot(OUT / name)
                    sys.stdout.write(f"saved docs/img/{name}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
