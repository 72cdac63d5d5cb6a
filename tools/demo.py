"""pingjia demo: the bridge with simulated keypads, a scripted stream of cases, and the reference platform.

What runs, all on this machine with the embedded defaults:
- the reference provincial platform (bridge/upstream/receiver.py) on a free port;
- the bridge (bridge/service.py): SQLite file, the local Mosquitto it starts
  itself, the case API and the status page on http://127.0.0.1:8080 (or a free port);
- four simulated keypads (tools/simkeypads.py: the real firmware core on CPython)
  at four windows, over MQTT with their own credentials;
- four clerks, one per window, opening and finishing cases through the case
  API; citizens press keys (mostly 5 stars, some 差评 with a reason, a mis-press
  corrected within the grace, some walking away unrated).
Each case's outcome is printed as it lands; at the end the day's report and the
platform's count. Nothing here is faked: it is the same code a hall runs.
"""
import json
import random
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import click

STARS = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}
WINDOWS = [
    ("W01", "综合受理窗口", "001", "政务服务中心"),
    ("W02", "不动产登记", "002", "自然资源局"),
    ("W03", "社保医保", "003", "人社局"),
    ("W04", "公安户政", "004", "公安局"),
]
MATTERS = [("11330100MB0001", "个人社保参保证明"), ("11330100MB0002", "不动产权证书补办"),
           ("11330100MB0003", "居民身份证换领"), ("11330100MB0004", "营业执照变更登记")]
CLERKS = ["王芳", "李强", "张敏", "刘洋"]
SIGN_KEY = "demo-platform-shared-secret"
MARKER = ".pingjia-demo"


def _free_port(preferred):
    """`preferred` when it is free, else (or when 0) a free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def _wait(pred, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def script(n, rnd):
    """The day's cases: (window index, what the citizen does). Deterministic for a seed."""
    plan = []
    for i in range(n):
        r = rnd.random()
        if r < 0.55:
            act = ("press", 5)
        elif r < 0.72:
            act = ("press", 4)
        elif r < 0.78:
            act = ("press", 3)
        elif r < 0.84:
            act = ("mispress", 1, 5)  # hits 1 by mistake, corrects to 5 within the grace
        elif r < 0.93:
            act = ("bad", rnd.choice((1, 2)), rnd.randrange(4))  # 差评 with a reason key
        else:
            act = ("walk",)  # leaves without rating: unrated, SMS invitation event
        plan.append((i % len(WINDOWS), act))
    return plan


class Demo:
    def __init__(self, workdir, cases, http_port, seed, prompt_timeout, echo=click.echo):
        self.dir = Path(workdir)
        self.n = cases
        self.http_port = http_port
        self.rnd = random.Random(seed)
        self.prompt_timeout = prompt_timeout
        self.echo = echo
        self.out_lock = threading.Lock()
        self.results = []
        self.stop = threading.Event()

    def say(self, text):
        with self.out_lock:
            self.echo(text)

    # -- setting up ---------------------------------------------------------------------------
    def prepare(self):
        if self.dir.exists():
            if not (self.dir / MARKER).exists():
                raise click.ClickException("%s exists and is not a demo folder; pick another --dir" % self.dir)
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        (self.dir / MARKER).write_text("made by pingjia demo; removed by the next demo run\n")

    def start_platform(self):
        from pingjia.bridge.upstream.receiver import Receiver

        self.platform = Receiver(profile="zhejiang", db=str(self.dir / "platform.db"), sign_alg="hmac-sha256",
                                 sign_key=SIGN_KEY).start()
        self.say("platform  reference provincial receiver at %s (profile zhejiang, HMAC-SHA256 signed)" % self.platform.url)

    def register(self):
        from pingjia.bridge import devices
        from pingjia.bridge.store import Store
        from pingjia.tools.simkeypads import derive_key

        store = Store(str(self.dir / "bridge.db"))
        store.migrate()
        self.keys = {}
        conn = store.connect()
        try:
            for i, (wid, name, dcode, dname) in enumerate(WINDOWS):
                dev = "KP-%04d" % (i + 1)
                self.keys[dev] = derive_key("pingjia-demo", dev)
                devices.add_window(conn, wid, name, dcode, dname, actor="demo")
                devices.add(conn, dev, key=self.keys[dev], window_id=wid, transport="mqtt", actor="demo")
        finally:
            conn.close()
        self.say("bridge    %d windows, %d keypads registered and bound in %s" % (len(WINDOWS), len(self.keys), store.path))

    def start_bridge(self):
        from pingjia.bridge import config, service

        port = _free_port(self.http_port)
        cfg = config.validate({
            "bridge": {"db": str(self.dir / "bridge.db"), "hall": "demo", "http_listen": "127.0.0.1:%d" % port,
                       "watchdog": False},
            "serial": {"enabled": False},
            "mqtt": {"embedded": True, "port": 0},
            "cases": {"prompt_timeout_s": self.prompt_timeout, "grace_s": 3.0, "reason_window_s": 6.0, "expire_slack_s": 1.0},
            "upstream": {"endpoint": self.platform.url, "profile": "zhejiang", "sign_alg": "hmac-sha256",
                         "sign_key": SIGN_KEY, "area_code": "330102"},
        }, "<demo>")
        ready = threading.Event()
        self.bridge = {}

        def on_ready(hub, http, transports):
            self.bridge.update(hub=hub, http=http, transports=transports)
            ready.set()

        self.rc = None

        def runner():
            self.rc = service.run(cfg, stop=self.stop, on_ready=on_ready)

        self.thread = threading.Thread(target=runner, name="bridge", daemon=True)
        self.thread.start()
        if not ready.wait(30):
            raise click.ClickException("the bridge did not start within 30 s (see the log above)")
        self.url = "http://127.0.0.1:%d" % port
        b = self.bridge["transports"].broker
        self.broker = b
        self.say("bridge    running: case API + status page %s/ , local Mosquitto on %s:%d" % (self.url, b.host, b.port))

    def start_keypads(self):
        from pingjia.bridge.broker import device_password
        from pingjia.tools.simkeypads import Fleet

        self.fleet = Fleet(len(self.keys), transport="mqtt", host=self.broker.host, port=self.broker.port, hall="demo",
                           root=str(self.dir / "keypads"), keys=self.keys,
                           password=lambda d: device_password(self.keys[d]), reason_keys=4, heartbeat_s=10)
        online = _wait(lambda: _http(self.url + "/api/status")["summary"]["online"] >= len(self.keys), 30, 0.2)
        if not online:
            raise click.ClickException("the simulated keypads did not come online within 30 s")
        self.say("keypads   %s online over MQTT (real firmware core, own credentials and topics)" % ", ".join(sorted(self.keys)))

    # -- the day -------------------------------------------------------------------------------
    def clerk(self, w, jobs, t0):
        wid, wname, dcode, dname = WINDOWS[w]
        dev = "KP-%04d" % (w + 1)
        for k, act in jobs:
            if self.stop.is_set():
                return
            pno = "BJ%s%04d" % (time.strftime("%Y%m%d", time.gmtime(time.time() + 8 * 3600)), k + 1)  # Beijing date
            code, matter = MATTERS[k % len(MATTERS)]
            _http(self.url + "/api/cases", {"project_no": pno, "window_id": wid, "task_code": code, "task_name": matter,
                                            "clerk_id": "C%02d" % (w + 1), "clerk_name": CLERKS[w],
                                            "contact_ref": "sms-ref-%04d" % (k + 1)})
            time.sleep(self.rnd.uniform(0.2, 0.6))  # the clerk handles the matter
            _http(self.url + "/api/cases/%s/finish" % pno, {})
            time.sleep(self.rnd.uniform(0.4, 1.0))  # the citizen looks at the keypad
            pressed = time.monotonic()
            if act[0] == "press":
                self.fleet.press(dev, act[1])
            elif act[0] == "mispress":
                self.fleet.press(dev, act[1])
                time.sleep(0.8)
                pressed = time.monotonic()
                self.fleet.press(dev, act[2])
            elif act[0] == "bad":
                self.fleet.press(dev, act[1])
                time.sleep(0.5)
                pressed = time.monotonic()
                self.fleet.press(dev, 6 + act[2])  # reason key
            want = act[2] if act[0] == "mispress" else (act[1] if act[0] != "walk" else None)

            def landed():
                c = _http(self.url + "/api/cases/%s" % pno)
                if want is None:
                    return c if c["state"] == "unrated" else None
                r = c.get("rating")
                if r and r["stars"] == want and (act[0] != "bad" or r.get("reasons")):
                    return c
                return None

            c = _wait(landed, self.prompt_timeout + 15)
            took = (time.monotonic() - pressed) * 1000
            self.results.append((pno, wid, want, c is not None))
            clock = "%6.1fs" % (time.monotonic() - t0)
            head = "%s  %s %-6s %s %-8s" % (clock, wid, wname[:6], pno, matter[:8])
            if c is None:
                self.say("%s  !! did not land as expected (see the bridge log)" % head)
            elif want is None:
                self.say("%s  —— 未评价 (walked away): recorded unrated, for the SMS invitation" % head)
            else:
                note = {"mispress": "  (★ pressed by mistake, corrected within the grace)",
                        "bad": "  reason code %s" % c["rating"].get("reasons")}.get(act[0], "")
                self.say("%s  %-5s %s  stored %.0f ms after the last key%s" % (head, "★" * want, STARS[want], took, note))

    def run_day(self):
        plan = script(self.n, self.rnd)
        per = {w: [] for w in range(len(WINDOWS))}
        for k, (w, act) in enumerate(plan):
            per[w].append((k, act))
        self.say("\n%d cases at %d windows (prompt %d s); each line is a case as it lands in the bridge's SQLite:\n"
                 % (self.n, len(WINDOWS), self.prompt_timeout))
        t0 = time.monotonic()
        clerks = [threading.Thread(target=self.clerk, args=(w, jobs, t0), daemon=True) for w, jobs in per.items()]
        for t in clerks:
            t.start()
        for t in clerks:
            while t.is_alive() and not self.stop.is_set():
                t.join(0.2)

    def summary(self):
        from pingjia.bridge import reports
        from pingjia.bridge.store import Store

        rated = sum(1 for r in self.results if r[2] is not None and r[3])
        expected = rated + sum(1 for r in self.results if r[2] is None and r[3])
        got = _wait(lambda: len(self.platform.records()) >= expected or None, 30, 0.2)
        conn = Store(str(self.dir / "bridge.db")).connect()
        try:
            rows = reports.report(conn, by="window", period="day")
            followups = conn.execute("SELECT COUNT(*) FROM followups WHERE state = '待核实'").fetchone()[0]
            unrated = conn.execute("SELECT COUNT(*) FROM cases WHERE state = 'unrated'").fetchone()[0]
        finally:
            conn.close()
        self.say("\nToday by window (computed in SQL from the bridge's store):")
        self.say(reports.render(rows, "table"))
        self.say("差评      %d follow-ups opened (待核实), walk them through with `pingjia followup`" % followups)
        self.say("未评价    %d unrated cases recorded and published for the SMS invitation (never turned into ratings)" % unrated)
        self.say("platform  received %d records (ratings and unrated cases), each once%s"
                 % (len(self.platform.records()), "" if got else " (still syncing)"))
        self.say("status    hall status page: %s/   keypads: %s/api/status" % (self.url, self.url))
        return all(r[3] for r in self.results)

    def close(self):
        self.stop.set()
        fleet = getattr(self, "fleet", None)
        if fleet is not None:
            fleet.stop()
        if getattr(self, "thread", None) is not None:
            self.thread.join(30)
        if getattr(self, "platform", None) is not None:
            self.platform.stop()


@click.command()
@click.option("--cases", default=24, show_default=True, help="How many cases the four clerks finish.")
@click.option("--dir", "workdir", default="var/demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the demo's SQLite files, broker and keypad journals (recreated each run).")
@click.option("--http-port", default=8080, show_default=True, help="Port for the case API and status page (a free one if taken).")
@click.option("--seed", default=2026, show_default=True, help="Seed of the scripted day (same seed, same day).")
@click.option("--prompt-timeout", default=8, show_default=True, help="Seconds a keypad asks for a rating.")
@click.option("--linger/--no-linger", default=None,
              help="Keep the bridge running after the day so you can open the status page (default: when run from a terminal).")
def demo(cases, workdir, http_port, seed, prompt_timeout, linger):
    """Run the bridge with simulated keypads, a scripted stream of cases and the reference platform."""
    import sys

    d = Demo(workdir, cases, http_port, seed, prompt_timeout)
    ok = False
    try:
        d.prepare()
        d.start_platform()
        d.register()
        d.start_bridge()
        d.start_keypads()
        d.run_day()
        ok = d.summary()
        if linger is None:
            linger = sys.stdin.isatty()
        if linger:
            d.say("\nThe bridge keeps running. Open %s/ ; try `pingjia --help`. Ctrl-C stops it." % d.url)
            while not d.stop.wait(1):
                pass
    except KeyboardInterrupt:
        d.say("\nstopping")
    finally:
        d.close()
    if not ok:
        raise SystemExit(1)


def register(group):
    group.add_command(demo)
