"""`whetstone doctor`: the contract fields, and the demo model checked against the gguf reader."""
import os
import sqlite3

import gguf
import numpy as np

DEMO_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_json_has_the_contract_fields(run_json, home):
    r = run_json("doctor")
    for key in ("version", "devices", "data_dir", "demo_model"):
        assert key in r, key
    assert r["data_dir"] == str(home)
    assert r["devices"][0]["kind"] == "cpu" and r["devices"][0]["available"]
    assert r["database"]["ok"] and r["database"]["journal_mode"] == "wal"
    assert r["demo_model"]["present"] is False
    assert r["demo_model"]["path"] == str(home / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")


def test_database_is_a_real_sqlite_file(run, home):
    run("doctor")
    con = sqlite3.connect(home / "whetstone.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "models" in tables


def test_demo_model_matches_the_gguf_reader(run_json, home, demo_model):
    (home / "models").mkdir(parents=True)
    os.symlink(demo_model, home / "models" / demo_model.name)
    m = run_json("doctor")["demo_model"]
    assert m["present"] and m["sha256_ok"] is True, m
    assert m["size_bytes"] == demo_model.stat().st_size == 98_362_432

    reader = gguf.GGUFReader(str(demo_model))
    arch_field = reader.fields["general.architecture"]
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert m["architecture"] == arch == "llama"
    assert m["tensor_count"] == len(reader.tensors) == 272
    assert m["vocab_size"] == len(tokens.data) == 49152
    types = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    assert types == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert int(np.sum([t.n_elements for t in reader.tensors])) > 100_000_000


def test_damaged_demo_model_is_flagged(run_json, home):
    (home / "models").mkdir(parents=True)
    (home / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    m = run_json("doctor")["demo_model"]
    assert m["present"] and m["sha256_ok"] is False
    assert DEMO_SHA256 in m["problem"]


def test_data_dir_that_is_a_file_exits_1_with_the_path(run, home):
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("not a directory")
    p = run("doctor", check=False)
    assert p.returncode == 1
    assert str(home) in p.stdout
