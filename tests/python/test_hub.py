"""`whetstone models add hf:owner/name` against a local server that speaks the parts of the
Hugging Face hub API that downloads use (repo info, tree listing, resolve HEAD/GET).

The hub itself is not reachable from tests; the server runs on 127.0.0.1 and is found
through HF_ENDPOINT, as a mirror would be.
"""
import hashlib
import json
import os
import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import tiny_models as tm

SHA = "0123456789abcdef0123456789abcdef01234567"


class Hub(BaseHTTPRequestHandler):
    repos: dict = {}  # "owner/name" -> folder
    requests: list = []  # (method, path, Range header, Authorization header)
    drop_after: dict = {}  # file name -> bytes to send before dropping the connection (once)
    gated: dict = {}  # "owner/name" -> the token it requires
    ignore_range = False  # answer range requests with the whole file, as some servers do
    license = "apache-2.0"

    def log_message(self, *args):
        pass

    def _send(self, code, body=b"", headers=None, head=False):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, obj):
        self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _files(self, folder: Path):
        return sorted(p for p in folder.iterdir() if p.is_file())

    def _route(self, head):
        path = self.path.split("?")[0]
        auth = self.headers.get("Authorization")
        Hub.requests.append((self.command, path, self.headers.get("Range"), auth))
        parts = path.strip("/").split("/")
        repo_id = "/".join(parts[2:4]) if parts[:2] == ["api", "models"] else "/".join(parts[:2])
        need = Hub.gated.get(repo_id)
        # as on the hub, a gated repo's info and file list are public; its files are not
        if need and len(parts) >= 3 and parts[2] == "resolve" and auth != f"Bearer {need}":
            return self._send(401, b'{"error":"Access to this model is restricted"}', {"X-Error-Code": "GatedRepo"}, head)
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo = "/".join(parts[2:4])
            folder = Hub.repos.get(repo)
            if folder is None:
                return self._send(404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"}, head)
            if len(parts) == 4 or parts[4] == "revision":
                return self._json({"id": repo, "sha": SHA, "gated": "manual" if repo in Hub.gated else False,
                                   "cardData": {"license": Hub.license}, "tags": [f"license:{Hub.license}"],
                                   "siblings": [{"rfilename": p.name} for p in self._files(folder)]})
            if parts[4] == "tree":
                def entry(p):
                    data = p.read_bytes()
                    e = {"type": "file", "path": p.name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    if p.suffix == ".safetensors":  # LFS files carry their sha256
                        digest = hashlib.sha256(data).hexdigest()  # hf-hub reads `sha256`; the hub names it `oid`
                        e["lfs"] = {"oid": digest, "sha256": digest, "size": len(data), "pointerSize": 134}
                    return e
                return self._json([entry(p) for p in self._files(folder)])
        if len(parts) >= 5 and parts[2] == "resolve":
            folder = Hub.repos.get("/".join(parts[:2]))
            f = folder / "/".join(parts[4:]) if folder else None
            if f is None or not f.is_file():
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, head)
            data = f.read_bytes()
            headers = {"X-Repo-Commit": SHA, "ETag": '"%s"' % hashlib.sha1(data).hexdigest()}
            rng = self.headers.get("Range")
            if rng and not head and not Hub.ignore_range:
                start, end = rng.removeprefix("bytes=").split("-")
                start, end = int(start), (int(end) if end else len(data) - 1)
                body = data[start:end + 1]
                cut = Hub.drop_after.pop(f.name, None)
                self.send_response(206)
                for k, v in {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if cut is not None:
                    # the connection drops mid-file: part of the body, then a hard close
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    self.close_connection = True
                    return None
                self.wfile.write(body)
                return None
            if head:
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                return None
            return self._send(200, data, headers)
        return self._send(404, b"", None, head)

    def do_GET(self):  # noqa: N802
        self._route(head=False)

    def do_HEAD(self):  # noqa: N802
        self._route(head=True)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Hub.repos = {}
    Hub.requests = []
    Hub.drop_after = {}
    Hub.gated = {}
    Hub.ignore_range = False
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    yield Hub
    server.shutdown()


def test_models_add_from_the_hub_downloads_only_what_it_needs(run, tmp_path, home, hub):
    repo = tm.make_model(tmp_path / "repo", family="llama", shard=True)
    (repo / "README.md").write_text("# a model card we do not need\n")
    (repo / "pytorch_model.bin").write_bytes(b"\0" * 1000)  # legacy weights: skipped
    hub.repos["tiny-org/tiny-llama"] = repo

    m = json.loads(run("models", "add", "hf:tiny-org/tiny-llama", "--json").stdout)
    assert m["source"] == "hub" and m["reference"] == "hf:tiny-org/tiny-llama" and m["id"] == "tiny-llama"
    local = Path(m["path"])
    assert local.is_relative_to(home / "models")
    got = sorted(p.name for p in local.iterdir() if p.is_file() and not p.name.startswith("."))
    want = sorted(p.name for p in repo.iterdir() if p.suffix in (".json", ".safetensors"))
    assert got == want
    for name in want:
        assert (local / name).read_bytes() == (repo / name).read_bytes()
    assert not any(n.endswith((".md", ".bin")) for n in got)

    # the downloaded model runs and equals the original
    f = tmp_path / "t.txt"
    f.write_text(tm.TEXT)
    a = json.loads(run("score", "--model", m["id"], "--text-file", str(f), "--json").stdout)
    b = json.loads(run("score", "--model", str(repo), "--text-file", str(f), "--json").stdout)
    assert a["token_nll"] == b["token_nll"]


def test_unknown_hub_model_is_a_user_error(run, hub):
    p = run("models", "add", "hf:nobody/missing", check=False)
    assert p.returncode == 1, p.stderr
    assert "hf:nobody/missing" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = run("models", "add", "hf:not-an-id", check=False)
    assert p.returncode == 1 and "hf:owner/name" in p.stderr
    assert os.environ["HF_ENDPOINT"].startswith("http://127.0.0.1:")


def big_model(tmp_path):
    """A tiny model whose weights are one file large enough to drop a connection in."""
    return tm.make_model(tmp_path / "repo", family="llama")


def test_a_connection_dropped_mid_file_is_continued_with_a_range_request(run, tmp_path, home, hub):
    repo = big_model(tmp_path)
    hub.repos["tiny-org/tiny-llama"] = repo
    size = (repo / "model.safetensors").stat().st_size
    hub.drop_after["model.safetensors"] = size // 3
    m = json.loads(run("models", "add", "hf:tiny-org/tiny-llama", "--json").stdout)
    local = Path(m["path"])
    assert (local / "model.safetensors").read_bytes() == (repo / "model.safetensors").read_bytes()
    ranges = [r for (meth, path, r, _) in hub.requests if meth == "GET" and path.endswith("/model.safetensors")]
    assert len(ranges) == 2 and ranges[0] == f"bytes=0-{size - 1}", ranges
    resumed_at = int(ranges[1].removeprefix("bytes=").split("-")[0])
    assert 0 < resumed_at <= size // 3 + 1, (resumed_at, size)
    assert not list(local.glob("*.partial"))


def left_partial(tmp_path, home, hub, content):
    """Serve a model and leave what a killed download would: a `.partial` weights file holding
    `content(data)`. Returns the local folder and the file's real bytes."""
    repo = big_model(tmp_path)
    hub.repos["tiny-org/tiny-llama"] = repo
    data = (repo / "model.safetensors").read_bytes()
    local = home / "models" / "hub" / "tiny-org--tiny-llama"
    local.mkdir(parents=True)
    (local / "model.safetensors.partial").write_bytes(content(data))
    return local, data


def test_an_interrupted_download_resumes_from_its_partial_file(run, tmp_path, home, hub):
    local, data = left_partial(tmp_path, home, hub, lambda d: d[: len(d) // 2])
    run("models", "add", "hf:tiny-org/tiny-llama")
    assert (local / "model.safetensors").read_bytes() == data
    ranges = [r for (meth, path, r, _) in hub.requests if meth == "GET" and path.endswith("/model.safetensors")]
    assert ranges == [f"bytes={len(data) // 2}-{len(data) - 1}"]


def test_a_corrupted_download_is_refused_and_not_kept(run, tmp_path, home, hub):
    local, data = left_partial(tmp_path, home, hub, lambda d: b"\xff" * (len(d) // 2))  # not the file's bytes
    p = run("models", "add", "hf:tiny-org/tiny-llama", check=False)
    assert p.returncode == 1 and "arrived corrupted" in p.stderr and "sha256" in p.stderr
    assert not (local / "model.safetensors").exists() and not (local / "model.safetensors.partial").exists()
    run("models", "add", "hf:tiny-org/tiny-llama")  # the next attempt starts over and succeeds
    assert (local / "model.safetensors").read_bytes() == data


def test_hub_info_reports_size_licence_and_gating_before_downloading(run, tmp_path, hub):
    repo = big_model(tmp_path)
    hub.repos["tiny-org/tiny-llama"] = repo
    info = json.loads(run("hub", "info", "hf:tiny-org/tiny-llama", "--json").stdout)
    files = {f["path"]: f for f in info["files"]}
    assert info["license"] == "apache-2.0" and info["gated"] is False
    assert info["total_bytes"] == sum(f["size"] for f in info["files"])
    sha = hashlib.sha256((repo / "model.safetensors").read_bytes()).hexdigest()
    assert files["model.safetensors"]["sha256"] == sha
    assert not any(m == "GET" and "/resolve/" in path for (m, path, _, _) in hub.requests)


def test_a_gated_model_needs_a_token_which_never_reaches_the_database_or_output(run, tmp_path, home, hub, monkeypatch):
    repo = big_model(tmp_path)
    token = "hf_SECRETtoken1234567890"
    hub.repos["tiny-org/gated"] = repo
    hub.gated["tiny-org/gated"] = token
    p = run("models", "add", "hf:tiny-org/gated", check=False)
    assert p.returncode == 1 and "is gated" in p.stderr and "hub login" in p.stderr
    monkeypatch.setenv("HF_TOKEN", token)
    p = run("models", "add", "hf:tiny-org/gated", "--json")
    sent = {auth for (_, _, _, auth) in hub.requests if auth}
    assert sent == {f"Bearer {token}"}
    run("runs", "list")  # any other command: nothing it prints or stores holds the token
    for f in home.rglob("*"):
        if f.is_file():
            assert token.encode() not in f.read_bytes(), f
    assert token not in p.stdout + p.stderr


@pytest.fixture
def keychain(tmp_path):
    """A private D-Bus session with an unlocked GNOME keyring (the Secret Service a Linux
    desktop provides), its files under a temporary HOME."""
    env = {**os.environ, "HOME": str(tmp_path / "kc-home"), "XDG_DATA_HOME": str(tmp_path / "kc-home" / "share")}
    Path(env["XDG_DATA_HOME"]).mkdir(parents=True)
    out = subprocess.run(["dbus-daemon", "--session", "--fork", "--print-address=1", "--print-pid=1"],
                         env=env, capture_output=True, text=True, timeout=30, check=True).stdout.split()
    env["DBUS_SESSION_BUS_ADDRESS"], bus_pid = out[0], int(out[1])
    subprocess.run(["gnome-keyring-daemon", "--unlock", "--components=secrets", "--daemonize"], input="pw",
                   env=env, capture_output=True, text=True, timeout=30, check=True)
    yield env
    os.kill(bus_pid, signal.SIGTERM)  # the keyring daemon exits with its bus


def test_the_hub_token_lives_in_the_os_keychain_only(tmp_path, home, hub, keychain, whetstone_bin):
    token = "hf_KEYCHAINtoken0987654321"
    hub.repos["tiny-org/gated"] = big_model(tmp_path)
    hub.gated["tiny-org/gated"] = token
    env = {**keychain, "WHETSTONE_HOME": str(home)}
    env.pop("HF_TOKEN", None)

    def go(*args, stdin=None):
        return subprocess.run([whetstone_bin, *args], input=stdin, env=env, capture_output=True, text=True, timeout=120)

    p = go("hub", "login", stdin=token + "\n")
    assert p.returncode == 0, p.stderr
    p = go("models", "add", "hf:tiny-org/gated")
    assert p.returncode == 0, p.stderr
    assert {auth for (_, _, _, auth) in hub.requests if auth} == {f"Bearer {token}"}
    assert token not in p.stdout + p.stderr
    for f in home.rglob("*"):
        if f.is_file():
            assert token.encode() not in f.read_bytes(), f
    assert go("hub", "logout").stdout.strip() == "token removed"
    hub.repos["tiny-org/gated-2"] = hub.repos["tiny-org/gated"]
    hub.gated["tiny-org/gated-2"] = token
    p = go("models", "add", "hf:tiny-org/gated-2")
    assert p.returncode == 1 and "is gated" in p.stderr


def test_a_downloaded_model_is_used_offline(run, tmp_path, home, hub, monkeypatch):
    repo = big_model(tmp_path)
    hub.repos["tiny-org/tiny-llama"] = repo
    first = json.loads(run("models", "add", "hf:tiny-org/tiny-llama", "--json").stdout)
    run("runs", "list")
    # the hub goes away: the complete copy serves, with or without HF_HUB_OFFLINE
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    again = json.loads(run("models", "add", "hf:tiny-org/tiny-llama", "--json").stdout)
    assert again["id"] == first["id"] and again["path"] == first["path"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert json.loads(run("models", "add", "hf:tiny-org/tiny-llama", "--json").stdout)["id"] == first["id"]
    p = run("models", "add", "hf:tiny-org/never-downloaded", check=False)
    assert p.returncode == 1 and "HF_HUB_OFFLINE" in p.stderr
    # a copy with a file missing is not complete, so it does not serve offline
    (Path(first["path"]) / "tokenizer.json").unlink()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    p = run("models", "add", "hf:tiny-org/tiny-llama", check=False)
    assert p.returncode == 1


def test_the_curated_list_matches_the_real_demo_model(run, demo_model):
    listed = json.loads(run("models", "curated", "--device", "cpu", "--json").stdout)
    assert len(listed) >= 6 and [m["parameters"] for m in listed] == sorted(m["parameters"] for m in listed)
    smol = next(m for m in listed if m["reference"] == "hf:HuggingFaceTB/SmolLM2-135M-Instruct")
    real = json.loads(run("models", "add", str(demo_model), "--json").stdout)
    assert smol["parameters"] == real["parameter_count"]
    assert all(m["qlora_bytes"] < m["lora_bytes"] and m["license"] for m in listed)
    assert [m["gated"] for m in listed if "Llama-3.2" in m["reference"]] == [True]


def test_a_server_that_ignores_ranges_still_gives_the_right_file(run, tmp_path, home, hub):
    local, data = left_partial(tmp_path, home, hub, lambda d: d[: len(d) // 2])
    hub.ignore_range = True  # the continuation gets the whole file from byte 0
    run("models", "add", "hf:tiny-org/tiny-llama")
    assert (local / "model.safetensors").read_bytes() == data
    gets = [r for (m, path, r, _) in hub.requests if m == "GET" and path.endswith("/model.safetensors")]
    assert gets == [f"bytes={len(data) // 2}-{len(data) - 1}", f"bytes=0-{len(data) - 1}"]
