import { fireEvent, render, screen } from "@testing-library/svelte";
import { beforeEach, describe, expect, it, vi } from "vitest";
import Home from "./Home.svelte";
import { api } from "../lib/ipc";
import { doctor, model, run } from "../components/tools/test-fixtures";

vi.mock("../lib/ipc", () => ({
  api: { doctor: vi.fn(), runsList: vi.fn(), modelsList: vi.fn(), modelsCurated: vi.fn() },
}));

beforeEach(() => {
  location.hash = "";
  vi.mocked(api.doctor).mockResolvedValue(doctor());
  vi.mocked(api.modelsList).mockResolvedValue([model()]);
  vi.mocked(api.modelsCurated).mockReset();
  vi.mocked(api.runsList).mockResolvedValue(
    Array.from({ length: 7 }, (_, i) =>
      run({ id: `run-${i + 1}`, created_at: `2025-05-0${i + 1}T10:00:00Z`, status: i === 6 ? "running" : "completed", best_eval_loss: i === 6 ? null : 0.5 - i / 100 }),
    ),
  );
});

describe("Home", () => {
  it("lists the five newest runs with status and best eval loss", async () => {
    render(Home);
    const links = await screen.findAllByTestId("home-recent-run");
    expect(links.map((l) => l.getAttribute("href"))).toEqual(["#run/run-7", "#run/run-6", "#run/run-5", "#run/run-4", "#run/run-3"]);
    expect(links[0].textContent).toContain("running");
    expect(links[0].textContent).toContain("best eval loss —");
    expect(links[1].textContent).toContain("best eval loss 0.4500");
    expect(screen.queryByTestId("home-first-run")).toBeNull();
    expect(api.modelsCurated).not.toHaveBeenCalled();
  });

  it("shows the main device with memory and threads", async () => {
    render(Home);
    const hw = await screen.findByTestId("home-hardware");
    await screen.findByText("Test CPU");
    expect(hw.textContent).toContain("16.0 GiB");
    expect(hw.textContent).toContain("8");
  });

  it("says what a GPU build would add when this one trains on the CPU only", async () => {
    render(Home);
    expect((await screen.findByTestId("home-cpu-build")).textContent).toContain("CUDA");
  });

  it("says a GPU build found no GPU instead", async () => {
    vi.mocked(api.doctor).mockResolvedValue({ ...doctor(), compiled_features: ["cuda"] });
    render(Home);
    expect((await screen.findByTestId("home-gpu-unused")).textContent).toContain("CUDA");
    expect(screen.queryByTestId("home-cpu-build")).toBeNull();
  });

  it("offers the recommended model on a first run and New run goes to the wizard", async () => {
    vi.mocked(api.modelsList).mockResolvedValue([]);
    vi.mocked(api.runsList).mockResolvedValue([]);
    vi.mocked(api.modelsCurated).mockResolvedValue([
      { reference: "hf:HuggingFaceTB/SmolLM2-135M-Instruct", name: "SmolLM2 135M Instruct", family: "llama", parameters: 134_515_008, download_bytes: 269_030_016, license: "apache-2.0", gated: false, note: "the demo model", lora_bytes: 1, qlora_bytes: 1, lora_fits: true, qlora_fits: true },
    ]);
    render(Home);
    const download = await screen.findByTestId("home-download-recommended");
    await screen.findByText("Download SmolLM2 135M Instruct");
    expect(screen.getByTestId("home-first-run").textContent).toContain("256.6 MiB");
    expect(screen.getByTestId("home-no-runs")).toBeTruthy();
    await fireEvent.click(download);
    expect(location.hash).toBe("#models");
    await fireEvent.click(screen.getByTestId("home-new-run"));
    expect(location.hash).toBe("#new");
  });

  it("shows a backend error instead of an empty list", async () => {
    vi.mocked(api.runsList).mockRejectedValue("database is locked");
    render(Home);
    expect((await screen.findByRole("alert")).textContent).toContain("database is locked");
  });
});
