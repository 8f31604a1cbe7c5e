import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import { beforeEach, describe, expect, it, vi } from "vitest";
import Export from "./Export.svelte";
import { api, onExport, reveal, type ExportReport, type ExportUpdate } from "../lib/ipc";
import { deferred, doctor, run } from "../components/tools/test-fixtures";
import { methodFacts } from "../../tests/mock/engine-facts";

vi.mock("../lib/ipc", () => ({
  api: { runShow: vi.fn(), doctor: vi.fn(), exportRun: vi.fn() },
  onExport: vi.fn(),
  reveal: vi.fn(),
}));

let emit: (u: ExportUpdate) => void = () => {};
const unlisten = vi.fn();

beforeEach(() => {
  vi.mocked(api.runShow).mockResolvedValue(run({ id: "run-1" }));
  vi.mocked(api.doctor).mockResolvedValue(doctor());
  vi.mocked(api.exportRun).mockReset();
  vi.mocked(reveal).mockReset().mockResolvedValue(undefined);
  unlisten.mockReset();
  vi.mocked(onExport).mockImplementation(async (h: (u: ExportUpdate) => void) => {
    emit = h;
    return unlisten;
  });
});

const report = (o: Partial<ExportReport> = {}): ExportReport => ({
  run_id: "run-1",
  format: "peft",
  kind: "peft_adapter",
  path: "/d/exports/run-1-peft",
  checkpoint: "best",
  files: [
    { name: "adapter_config.json", bytes: 812, sha256: "a" },
    { name: "adapter_model.safetensors", bytes: 3_688_544, sha256: "b" },
  ],
  seconds: 0.84,
  next_step: null,
  ...o,
});

describe("Export", () => {
  it("says so when export stages cannot be followed", async () => {
    vi.mocked(onExport).mockRejectedValue("event plugin not available");
    render(Export, { arg: "run-1" });
    const box = await screen.findByTestId("export-listen-error");
    expect(box.getAttribute("role")).toBe("alert");
    expect(box.textContent).toContain("event plugin not available");
  });

  it("says what each format writes and where before anything runs", async () => {
    render(Export, { arg: "run-1" });
    expect((await screen.findByTestId("export-summary")).textContent).toContain("lora");
    for (const f of ["peft", "merged", "gguf", "ollama"]) expect(screen.getByTestId(`export-${f}`)).toBeTruthy();
    await screen.findByText("/d/exports/run-1-merged");
    expect((screen.getByTestId("export-dtype-merged") as HTMLSelectElement).value).toBe("f16");
    expect([...(screen.getByTestId("export-dtype-gguf") as HTMLSelectElement).options].map((o) => o.value)).toEqual(["f16", "q8_0", "f32"]);
  });

  it("shows the current stage of this run and format, then the done state", async () => {
    const d = deferred<ExportReport>();
    vi.mocked(api.exportRun).mockReturnValue(d.promise);
    render(Export, { arg: "run-1" });
    await fireEvent.click(await screen.findByTestId("export-peft"));
    expect(api.exportRun).toHaveBeenCalledWith("run-1", "peft", undefined);
    expect(screen.getByTestId("export-stage").textContent).toBe("Starting…");
    emit({ run_id: "run-1", format: "peft", stage: "writing the PEFT adapter" });
    emit({ run_id: "run-9", format: "peft", stage: "someone else's export" });
    emit({ run_id: "run-1", format: "gguf", stage: "another format" });
    await waitFor(() => expect(screen.getByTestId("export-stage").textContent).toBe("writing the PEFT adapter"));
    expect((screen.getByTestId("export-peft") as HTMLButtonElement).disabled).toBe(true);

    d.resolve(report());
    const done = await screen.findByTestId("export-done");
    expect(done.dataset.path).toBe("/d/exports/run-1-peft");
    expect(screen.queryByTestId("export-stage")).toBeNull();
    const files = screen.getAllByTestId("export-file").map((r) => r.textContent);
    expect(files[1]).toContain("adapter_model.safetensors");
    expect(files[1]).toContain("3.5 MiB");
    expect(screen.getByTestId("export-path").textContent).toBe("/d/exports/run-1-peft");
    await fireEvent.click(screen.getByTestId("export-reveal"));
    expect(reveal).toHaveBeenCalledWith("/d/exports/run-1-peft");
  });

  it("passes the chosen dtype and shows the next step for Ollama", async () => {
    vi.mocked(api.exportRun)
      .mockResolvedValueOnce(report({ format: "merged", kind: "merged_model", path: "/d/exports/run-1-merged" }))
      .mockResolvedValueOnce(
      report({ format: "ollama", kind: "ollama_adapter", path: "/d/exports/run-1-ollama", next_step: "ollama create smol-run-1 -f /d/exports/run-1-ollama/Modelfile" }),
    );
    render(Export, { arg: "run-1" });
    await fireEvent.change(await screen.findByTestId("export-dtype-merged"), { target: { value: "bf16" } });
    await fireEvent.click(screen.getByTestId("export-merged"));
    expect(api.exportRun).toHaveBeenLastCalledWith("run-1", "merged", "bf16");
    await fireEvent.click(screen.getByTestId("export-ollama"));
    expect(api.exportRun).toHaveBeenLastCalledWith("run-1", "ollama", undefined);
    expect((await screen.findByTestId("export-next-step")).textContent).toBe("ollama create smol-run-1 -f /d/exports/run-1-ollama/Modelfile");
  });

  it("shows the backend's reason in an alert when the method cannot be exported so", async () => {
    const why = methodFacts("adapter").export_refusals.peft!;
    expect(why).toContain("a `adapter` run has no PEFT adapter form");
    vi.mocked(api.exportRun).mockRejectedValue(why);
    render(Export, { arg: "run-1" });
    await fireEvent.click(await screen.findByTestId("export-peft"));
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toContain(why);
    expect(screen.queryByTestId("export-done")).toBeNull();
    expect((screen.getByTestId("export-peft") as HTMLButtonElement).disabled).toBe(false);
  });

  it("a reveal failure is shown, not swallowed; a missing run is an alert", async () => {
    vi.mocked(api.exportRun).mockResolvedValue(report());
    vi.mocked(reveal).mockRejectedValue("path not allowed: /d/exports/run-1-peft");
    const { unmount } = render(Export, { arg: "run-1" });
    await fireEvent.click(await screen.findByTestId("export-peft"));
    await fireEvent.click(await screen.findByTestId("export-reveal"));
    expect((await screen.findByTestId("export-reveal-error")).textContent).toContain("path not allowed");
    unmount();
    expect(unlisten).toHaveBeenCalled();

    vi.mocked(api.runShow).mockRejectedValue("no run `run-7` (see `whetstone runs list`)");
    render(Export, { arg: "run-7" });
    expect((await screen.findByRole("alert")).textContent).toContain("no run `run-7`");
  });
});
