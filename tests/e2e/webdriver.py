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
import tempfile
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


    def execute_async(self, script, *args):
        """Run `script` (an async function body over `args`) and return what it resolves to."""
        wrapped = ("const done = arguments[arguments.length - 1];"
                   f"(async (...args) => {{ {script} }})(...Array.from(arguments).slice(0, -1))"
                   ".then(done, e => done({error: String(e)}));")
        return self.s("POST", "/execute/async", {"script": wrapped, "args": list(args)})


# How a string renders: draw each distinct CJK character of the text in the given font on a
# canvas and fingerprint its pixels. Where no font has a glyph, every character draws the
# same missing-glyph box (or nothing), so distinct characters share a fingerprint.
GLYPH_PRINTS = """
const [text, font] = args;
const chars = [...new Set([...text].filter(c => /[\\u2e80-\\u9fff\\uff00-\\uffef]/.test(c)))];
const canvas = document.createElement("canvas");
canvas.width = 48; canvas.height = 48;
const g = canvas.getContext("2d", {willReadFrequently: true});
const prints = {};
for (const c of chars) {
  g.clearRect(0, 0, 48, 48);
  g.font = font; g.fillStyle = "#000"; g.textBaseline = "top";
  g.fillText(c, 4, 4);
  const px = g.getImageData(0, 0, 48, 48).data;
  let h = 2166136261, ink = 0;
  for (let i = 3; i < px.length; i += 4) { h = Math.imul(h ^ px[i], 16777619); ink += px[i] > 0; }
  prints[c] = ink ? String(h >>> 0) : "blank";
}
return prints;
"""


def glyphs_distinct(prints):
    """Whether every character drew ink of its own (no two share a fingerprint)."""
    values = list(prints.values())
    return bool(values) and "blank" not in values and len(set(values)) == len(values)


def check_chinese_renders(wd, shot):
    """Switch the window to 简体中文 and check that what it shows renders as real glyphs: the
    shipped CJK face is loaded for the page's characters, each character draws its own glyph
    in the page's font, and the same characters in the system's fonts alone do not (the
    control: this machine has no CJK font, so the check can fail). Screenshot `shot`, then
    back to English."""
    def lang():
        return wd.s("POST", "/execute/sync", {"script": "return document.documentElement.lang;", "args": []})

    if lang() != "zh-CN":
        offer = wd.text('[data-testid="lang-toggle"]')  # "中文", in the English interface
        wd.click('[data-testid="lang-toggle"]')
    else:
        offer = ""
    wd.wait_for("the 简体中文 interface", lambda: lang() == "zh-CN")
    button = wd.text('[data-testid="lang-toggle"]')
    page = wd.wait_for("Chinese text on the page", lambda: (lambda t: t if sum(0x4E00 <= ord(c) <= 0x9FFF for c in t) >= 20 else None)(
        wd.s("POST", "/execute/sync", {"script": "return document.body.innerText;", "args": []})))
    loaded = wd.execute_async("""
        await document.fonts.ready;
        const faces = await document.fonts.load('14px "Whetstone CJK"', args[0]);
        return {faces: faces.length, check: document.fonts.check('14px "Whetstone CJK"', args[0]),
                family: getComputedStyle(document.body).fontFamily};""", page)
    if not loaded or loaded.get("error") or not loaded["faces"] or not loaded["check"]:
        fail(f"the shipped CJK font is not loaded for the Chinese interface: {loaded}")
    control = wd.execute_async(GLYPH_PRINTS, "中文界面训练", "24px sans-serif")
    if glyphs_distinct(control):
        fail("this machine's own fonts draw Chinese (a CJK font is installed), so the check "
             "below cannot tell the shipped font from it; run without one (see Desktop)")
    shown = wd.execute_async(GLYPH_PRINTS, page + offer, f"24px {loaded['family']}")
    if not glyphs_distinct(shown):
        same = {}
        for c, p in shown.items():
            same.setdefault(p, []).append(c)
        fail(f"Chinese characters render as boxes or blanks: {[v for v in same.values() if len(v) > 1 or 'blank' in v][:5]}")
    time.sleep(0.5)
    wd.screenshot(shot)
    print(f"e2e: 简体中文: {len(shown)} distinct characters on screen render as their own glyphs "
          f"(the language button read {offer!r}, now {button!r}); system fonts alone draw boxes")
    wd.click('[data-testid="lang-toggle"]')
    wd.wait_for("the English interface again", lambda: lang() == "en")


def fonts_without_cjk(folder):
    """A fontconfig file that sees only DejaVu (the fonts a fresh Debian or Ubuntu desktop-less
    install has), so the window cannot borrow a CJK font from the test machine."""
    conf = Path(folder) / "fonts.conf"
    dirs = [d for d in ("/usr/share/fonts/truetype/dejavu",) if Path(d).is_dir()]
    conf.write_text("<?xml version=\"1.0\"?>\n<!DOCTYPE fontconfig SYSTEM \"fonts.dtd\">\n<fontconfig>\n"
                    + "".join(f"  <dir>{d}</dir>\n" for d in dirs)
                    + f"  <cachedir>{Path(folder) / 'cache'}</cachedir>\n</fontconfig>\n")
    return str(conf)


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
        self.fonts = tempfile.mkdtemp(prefix="whetstone-fonts-")
        self.env["FONTCONFIG_FILE"] = fonts_without_cjk(self.fonts)
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
        shutil.rmtree(self.fonts, ignore_errors=True)
        return False
