"""Plain W3C WebDriver over HTTP (standard library only) for the desktop tests: a display,
tauri-driver and a session on the app, shared by tests/e2e/run and tests/bundle/run."""
import base64
import http.client
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_S = 60


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_display():
    for n in range(90, 200):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    fail("no free X display number")


class WebDriver:
    def __init__(self, port, shots):
        self.base = f"http://127.0.0.1:{port}"
        self.session = None
        self.shots = Path(shots)

    def call(self, method, path, body=None, timeout=30):
        data = None if body is None else json.dumps(body).encode()
        # A dropped connection to the driver (seen once under load) is retried for requests
        # that only read; creating a session is not repeated.
        attempts = 1 if path == "/session" else 3
        for attempt in range(attempts):
            req = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    return json.loads(r.read() or b"{}").get("value")
            except urllib.error.HTTPError as e:
                raise RuntimeError(f"{method} {path}: HTTP {e.code}: {e.read()[:500]!r}") from None
            except (urllib.error.URLError, ConnectionError, http.client.HTTPException, TimeoutError) as e:
                if attempt + 1 == attempts:
                    raise RuntimeError(f"{method} {path}: {e!r}") from None
                time.sleep(0.5)

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.session}{path}", body)

    def find(self, css):
        v = self.s("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(v.values()))

    def text(self, css):
        return self.s("GET", f"/element/{self.find(css)}/text")

    def attr(self, css, name):
        return self.s("GET", f"/element/{self.find(css)}/attribute/{name}")

    def wait_for(self, what, fn, timeout=TIMEOUT_S):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                v = fn()
                if v:
                    return v
            except RuntimeError as e:
                last = e
            time.sleep(0.25)
        fail(f"timed out after {timeout}s waiting for {what} (last error: {last})")

    def click(self, css):
        self.s("POST", f"/element/{self.find(css)}/click", {})

    def js_click(self, css):
        """Click through the DOM (table rows: WebKit's driver calls a <tr> not interactable)."""
        ok = self.s("POST", "/execute/sync", {"script": "const e = document.querySelector(arguments[0]); if (!e) return false; e.click(); return true;", "args": [css]})
        if not ok:
            fail(f"no element {css}")

    def exists(self, css):
        v = self.s("POST", "/elements", {"using": "css selector", "value": css})
        return len(v) > 0

    def type(self, css, text):
        el = self.find(css)
        self.s("POST", f"/element/{el}/clear", {})
        self.s("POST", f"/element/{el}/value", {"text": text})

    def click_when_ready(self, what, css, timeout=TIMEOUT_S):
        """Click once the element exists and is enabled."""
        def ready():
            el = self.find(css)
            return self.s("GET", f"/element/{el}/enabled") and el
        el = self.wait_for(what, ready, timeout)
        self.s("POST", f"/element/{el}/click", {})

    def go(self, hash_):
        self.s("POST", "/execute/sync", {"script": f"location.hash = {json.dumps(hash_)};", "args": []})

    def screenshot(self, name):
        self.shots.mkdir(exist_ok=True)
        png = base64.b64decode(self.s("GET", "/screenshot"))
        (self.shots / f"{name}.png").write_bytes(png)
        print(f"screenshot {self.shots / (name + '.png')}")



class Desktop:
    """Xvfb + tauri-driver started for one test and ended by process id (never others')."""

    def __init__(self, env, shots):
        self.env = dict(env)
        self.procs = []
        self.shots = shots

    def __enter__(self):
        driver_bin = shutil.which("tauri-driver") or str(Path.home() / ".cargo/bin/tauri-driver")
        native = shutil.which("WebKitWebDriver") or fail("WebKitWebDriver missing (webkit2gtk-driver)")
        display = free_display()
        self.env["DISPLAY"] = f":{display}"
        self.procs.append(subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", "1280x860x24", "-nolisten", "tcp"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        port = free_port()
        self.procs.append(subprocess.Popen([driver_bin, "--port", str(port), "--native-port", str(free_port()),
                                            "--native-driver", native], env=self.env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.wd = WebDriver(port, self.shots)
        self.wd.wait_for("tauri-driver", lambda: self.wd.call("GET", "/status", timeout=2) is not None, timeout=30)
        return self

    def open(self, app):
        """Start the app and return the seconds until the session (the window) exists."""
        started = time.monotonic()
        caps = {"capabilities": {"alwaysMatch": {"tauri:options": {"application": app}}}}
        self.wd.session = self.wd.call("POST", "/session", caps, timeout=60)["sessionId"]
        return time.monotonic() - started

    def __exit__(self, *exc):
        if self.wd.session:
            try:
                self.wd.s("DELETE", "")
            except RuntimeError:
                pass
            self.wd.session = None
        for p in reversed(self.procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        return False
