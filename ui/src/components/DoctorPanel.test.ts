import { render, screen } from "@testing-library/svelte";
import { describe, expect, it } from "vitest";
import DoctorPanel from "./DoctorPanel.svelte";
import type { DoctorReport } from "../lib/ipc";

function report(overrides: Partial<DoctorReport> = {}): DoctorReport {
  return {
    version: "0.1.0",
    os: "linux",
    arch: "x86_64",
    compiled_features: [],
    libraries: [{ name: "candle-core", version: "0.11.1" }],
    devices: [
      {
        kind: "cpu",
        ordinal: 0,
        name: "Test CPU",
        available: true,
        threads: 2,
        memory_bytes: 24 * 2 ** 30,
        features: ["avx2", "fma"],
        bf16: false,
        note: null,
      },
    ],
    data_dir: "/home/u/.local/share/whetstone",
    data_dir_error: null,
    database: {
      path: "/home/u/.local/share/whetstone/whetstone.db",
      ok: true,
      journal_mode: "wal",
      schema_version: 1,
      models_registered: 0,
      error: null,
    },
    demo_model: {
      file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
      path: "/x/models/SmolLM2-135M-Instruct.Q4_1.gguf",
      present: true,
      size_bytes: 98362432,
      expected_sha256: "b179",
      sha256_ok: true,
      architecture: "llama",
      tensor_count: 272,
      vocab_size: 49152,
      problem: null,
    },
    ...overrides,
  };
}

describe("DoctorPanel", () => {
  it("shows version, device and a verified demo model", () => {
    render(DoctorPanel, { report: report(), error: null });
    expect(screen.getByTestId("doctor-version").textContent).toContain("0.1.0");
    expect(screen.getByTestId("device").textContent).toContain("Test CPU");
    expect(screen.getByTestId("device").textContent).toContain("24.0 GiB");
    const demo = screen.getByTestId("doctor-demo-model");
    expect(demo.dataset.state).toBe("ok");
    expect(demo.textContent).toContain("272 tensors");
  });

  it("tells the user how to fetch a missing demo model", () => {
    const r = report();
    r.demo_model = { ...r.demo_model, present: false, sha256_ok: null, size_bytes: null };
    render(DoctorPanel, { report: r, error: null });
    const demo = screen.getByTestId("doctor-demo-model");
    expect(demo.dataset.state).toBe("missing");
    expect(demo.textContent).toContain("./dev setup");
  });

  it("shows a backend error instead of an empty panel", () => {
    render(DoctorPanel, { report: null, error: "boom" });
    expect(screen.getByRole("alert").textContent).toContain("boom");
  });
});
