"""Status page fixtures: a seeded SQLite file, a real HTTP server over it, headless Debian Chromium."""
import http.server
import os
import threading
from pathlib import Path

import pytest

from pingjia.bridge import statuspage
from tests.web import hallseed

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


def serve_statuspage(db_path):
    """A stdlib HTTP server that serves only statuspage.handle over `db_path`; returns (server, base_url)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            got = statuspage.handle(db_path, "GET", self.path) or (404, "text/plain", b"not found\n")
            status, ctype, body = got
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, "http://127.0.0.1:%d" % srv.server_address[1]


@pytest.fixture
def hall_db(tmp_path):
    path = tmp_path / "bridge.db"
    conn = hallseed.seed(str(path))
    yield path, conn
    conn.close()


@pytest.fixture
def page_server(hall_db):
    srv, url = serve_statuspage(str(hall_db[0]))
    yield url
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian chromium is required at %s (bash scripts/bootstrap.sh test installs it)" % CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def shot():
    ARTIFACTS.mkdir(exist_ok=True)

    def take(page, name):
        path = ARTIFACTS / ("%s.png" % name)
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
