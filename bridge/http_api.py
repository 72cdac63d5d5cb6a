# pingjia.bridge.http_api: the hall PC's HTTP API (stdlib ThreadingHTTPServer).
#
#   POST /api/cases                       {project_no, window_id, task_code, task_name, dept_code,
#                                          dept_name, clerk_id, clerk_name, user_prop, contact_ref} -> 201 case
#   POST /api/cases/<project_no>/finish   -> 200 case (state prompted; unrated at once if no keypad)
#   POST /api/cases/<project_no>/cancel   -> 200 case
#   GET  /api/cases/<project_no>          -> 200 case with `rating`, `ratings`, `presses`
#   GET  /api/cases?state=&window_id=&limit=
#   GET  /api/status                      -> every keypad's state, problems first, plus bridge counters
#   GET  /api/devices, GET /api/windows
#   POST /api/devices/<id>/identify {"seconds": 10}, POST /api/devices/<id>/query
#   GET  /, /static/*, /api/hall          -> pingjia.bridge.statuspage.handle(store_path, method, path)
#   GET  /api/report, /api/followups, /api/upstream -> pingjia.bridge.reports.route(store_path, method, path)
# Errors are JSON {"error": "...", "field": "..."} with a 4xx status. With
# bridge.http_token set, /api/cases* and /api/devices need
# `Authorization: Bearer <token>`; status and the hall page stay open (a wall
# screen can't send a header, and they hold no personal data).
import hmac
import http.server
import importlib
import json
import logging
import threading
import urllib.parse

from ..protocol import messages as m
from . import cases, status

log = logging.getLogger("pingjia.bridge.http")

MAX_BODY = 64 * 1024


# Routes other modules own, each handler(store_path, method, path) ->
# (status, content_type, body) or None when the path is not theirs.
MOUNTS = (
    ("pingjia.bridge.statuspage", "handle"),  # GET /, /static/*, /api/hall
    ("pingjia.bridge.reports", "route"),  # GET /api/report, /api/followups, /api/upstream
)


def _mounts():
    return [getattr(importlib.import_module(mod), fn) for mod, fn in MOUNTS]


class ApiError(Exception):
    def __init__(self, status, msg, field=None):
        super().__init__(msg)
        self.status, self.field = status, field


class Api:
    """Routing and the work behind each route; the handler class only moves bytes."""

    def __init__(self, hub, token=""):
        self.hub = hub
        self.store = hub.store
        self.token = token
        self.mounts = _mounts()

    def protected(self, path):
        return bool(self.token) and (path.startswith("/api/cases") or path.startswith("/api/devices"))

    def authorized(self, header):
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self.token.encode())

    def route(self, method, path, query, body):
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["api", "cases"]:
            return self._cases(method, parts[2:], query, body)
        if parts[:2] == ["api", "devices"] and len(parts) == 4 and parts[3] in ("identify", "query"):
            return self._device_command(method, parts[2], parts[3], body)
        if method != "GET":
            raise ApiError(405, "method not allowed")
        conn = self.store.connect(readonly=True)
        try:
            if path == "/api/status":
                return 200, status.status(conn, self.hub.clock(), self.hub.stats(), self.hub.hall)
            if path == "/api/devices":
                return 200, {"devices": status.devices(conn)}
            if path == "/api/windows":
                return 200, {"windows": status.windows(conn)}
        finally:
            conn.close()
        raise ApiError(404, "no such endpoint %s" % path)

    def _cases(self, method, rest, query, body):
        if not rest:
            if method == "POST":
                return 201, self.hub.open_case(self._json(body))
            if method == "GET":
                conn = self.store.connect(readonly=True)
                try:
                    limit = query.get("limit", ["100"])[0]
                    if not limit.isdigit():
                        raise ApiError(400, "limit must be a number", "limit")
                    return 200, {"cases": cases.listing(conn, query.get("state", [None])[0],
                                                        query.get("window_id", [None])[0], min(int(limit), 1000))}
                finally:
                    conn.close()
            raise ApiError(405, "use POST to open a case or GET to list")
        pn = rest[0]
        if len(rest) == 1:
            if method != "GET":
                raise ApiError(405, "use GET to read a case")
            c = self.hub.get_case(pn)
            if c is None:
                raise ApiError(404, "unknown case %s" % pn)
            return 200, c
        if len(rest) == 2 and rest[1] in ("finish", "cancel"):
            if method != "POST":
                raise ApiError(405, "use POST to %s a case" % rest[1])
            fn = self.hub.finish_case if rest[1] == "finish" else self.hub.cancel_case
            return 200, fn(pn)
        raise ApiError(404, "no such endpoint")

    def _device_command(self, method, device_id, what, body):
        """POST /api/devices/<id>/identify {"seconds": 10} (blink so hall IT find the unit) | /query (HELLO+STATUS)."""
        if method != "POST":
            raise ApiError(405, "use POST")
        if self.hub.signer(device_id) is None:
            raise ApiError(404, "unknown or retired device %s" % device_id)
        if what == "identify":
            seconds = self._json(body).get("seconds", 10) if body else 10
            if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= 600:
                raise ApiError(400, "seconds must be an integer 1..600", "seconds")
            sent = self.hub.command(device_id, m.IDENTIFY, seconds=seconds)
        else:
            sent = self.hub.command(device_id, m.QUERY)
        return 200, {"device_id": device_id, "command": what, "sent": bool(sent)}

    @staticmethod
    def _json(body):
        if not body:
            raise ApiError(400, "a JSON body is required")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, "body is not valid JSON: %s" % e)


def make_handler(api):
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "pingjia-bridge"
        protocol_version = "HTTP/1.1"
        timeout = 30  # seconds a client may stall a request before its thread is freed

        def _serve(self, method):
            url = urllib.parse.urlsplit(self.path)
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    raise ApiError(413, "body larger than %d bytes" % MAX_BODY)
                body = self.rfile.read(length) if length else b""
                if not url.path.startswith(("/api/cases", "/api/status", "/api/devices", "/api/windows")):
                    for handler in api.mounts:
                        got = handler(api.store.path, method, self.path)
                        if got is not None:
                            return self._reply(*got)
                if api.protected(url.path) and not api.authorized(self.headers.get("Authorization")):
                    raise ApiError(401, "missing or wrong bearer token")
                code, obj = api.route(method, url.path, urllib.parse.parse_qs(url.query), body)
            except ApiError as e:
                code, obj = e.status, {"error": str(e), **({"field": e.field} if e.field else {})}
            except cases.CaseError as e:
                code, obj = e.status, {"error": str(e), **({"field": e.field} if e.field else {})}
            except Exception as e:  # a bug or the database down: 503 with the reason, logged
                log.error("http request failed method=%s path=%s error=%r", method, url.path, e)
                code, obj = 503, {"error": "bridge could not do it: %s" % e}
            self._reply(code, "application/json; charset=utf-8", json.dumps(obj, ensure_ascii=False).encode())

        def _reply(self, code, ctype, body):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self):
            self._serve("GET")

        def do_HEAD(self):
            self._serve("HEAD")

        def do_POST(self):
            self._serve("POST")

        def log_message(self, fmt, *args):
            log.debug("http %s", fmt % args)

    return Handler


class HttpServer:
    def __init__(self, hub, host="127.0.0.1", port=8080, token=""):
        self.api = Api(hub, token)
        self.server = http.server.ThreadingHTTPServer((host, port), make_handler(self.api))
        self.server.daemon_threads = True
        self.host, self.port = self.server.server_address[:2]
        self._thread = None

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    def start(self):
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)
        self._thread.start()
        log.info("http listening url=%s", self.url)
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
