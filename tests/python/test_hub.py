"""`whetstone models add hf:owner/name` against a local server that speaks the parts of the
Hugging Face hub API that downloads use (repo info, tree listing, resolve HEAD/GET).

The hub itself is not reachable from tests; the server runs on 127.0.0.1 and is found
through HF_ENDPOINT, as a mirror would be.
"""
import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import tiny_models as tm

SHA = "0123456789abcdef0123456789abcdef01234567"


class Hub(BaseHTTPRequestHandler):
    repos: dict = {}  # "owner/name" -> folder
    requests: list = []

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
        Hub.requests.append((self.command, path))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6:
            repo = "/".join(parts[2:4])
            folder = Hub.repos.get(repo)
            if folder is None:
                return self._send(404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"}, head)
            if parts[4] == "revision":
                return self._json({"id": repo, "sha": SHA,
                                   "siblings": [{"rfilename": p.name} for p in self._files(folder)]})
            if parts[4] == "tree":
                return self._json([{"type": "file", "path": p.name, "size": p.stat().st_size,
                                    "oid": hashlib.sha1(p.read_bytes()).hexdigest()} for p in self._files(folder)])
        if len(parts) >= 5 and parts[2] == "resolve":
            folder = Hub.repos.get("/".join(parts[:2]))
            f = folder / "/".join(parts[4:]) if folder else None
            if f is None or not f.is_file():
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, head)
            data = f.read_bytes()
            headers = {"X-Repo-Commit": SHA, "ETag": '"%s"' % hashlib.sha1(data).hexdigest()}
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
    got = sorted(p.name for p in local.iterdir() if p.is_file())
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
