import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it, vi } from "vitest";
import type { DownloadUpdate } from "../../lib/ipc";
import { GiB, QWEN, SAMPLE, SMOL, inspection } from "./fixtures";

vi.mock("../../lib/ipc", () => ({
  api: {
    modelsList: vi.fn(),
    modelsCurated: vi.fn(),
    modelsAdd: vi.fn(),
    hubInfo: vi.fn(),
    hubDownload: vi.fn(),
    datasetsList: vi.fn(),
    datasetsSamples: vi.fn(),
    datasetsAdd: vi.fn(),
    datasetsInspect: vi.fn(),
  },
  onDownload: vi.fn(),
  pickPath: vi.fn(),
}));

import { api, onDownload } from "../../lib/ipc";
import ModelPicker from "./ModelPicker.svelte";
import DatasetPicker from "./DatasetPicker.svelte";

const m = vi.mocked(api);
const listen = vi.mocked(onDownload);
let emit: (u: DownloadUpdate) => void = () => {};
const unlisten = vi.fn();

const CURATED = [
  {
    reference: "hf:HuggingFaceTB/SmolLM2-360M-Instruct",
    name: "SmolLM2 360M Instruct",
    family: "llama",
    parameters: 361_821_120,
    download_bytes: 723_642_240,
    license: "apache-2.0",
    gated: false,
    note: "small and quick; fine on a CPU",
    lora_bytes: 2.1 * GiB,
    qlora_bytes: 1.2 * GiB,
    lora_fits: true,
    qlora_fits: true,
  },
  {
    reference: "hf:meta-llama/Llama-3.2-1B-Instruct",
    name: "Llama 3.2 1B Instruct",
    family: "llama",
    parameters: 1_235_814_400,
    download_bytes: 2_471_628_800,
    license: "llama3.2",
    gated: true,
    note: "gated: accept Meta's licence on the hub",
    lora_bytes: 26 * GiB,
    qlora_bytes: 3.4 * GiB,
    lora_fits: false,
    qlora_fits: true,
  },
];

beforeEach(() => {
  vi.clearAllMocks();
  m.modelsList.mockResolvedValue([SMOL]);
  m.modelsCurated.mockResolvedValue(CURATED);
  listen.mockImplementation(async (handler) => {
    emit = handler;
    return unlisten;
  });
  m.datasetsList.mockResolvedValue([SAMPLE]);
  m.datasetsSamples.mockResolvedValue([{ name: SAMPLE.name, path: SAMPLE.path, description: "sample", records: 300 }]);
  m.datasetsInspect.mockResolvedValue(inspection());
});

describe("ModelPicker", () => {
  it("chooses the demo model when it is the only one", async () => {
    const onselect = vi.fn();
    render(ModelPicker, { mode: "pick", onselect });
    await waitFor(() => expect(onselect).toHaveBeenCalledWith(SMOL));
    const option = screen.getByTestId("model-option");
    expect(option.dataset.id).toBe(SMOL.id);
    expect(option.textContent).toContain("135M");
  });

  it("adds a local folder by path and shows the backend's error as it came", async () => {
    const onselect = vi.fn();
    m.modelsList.mockResolvedValue([SMOL, QWEN]);
    m.modelsAdd.mockRejectedValueOnce("/tmp/nothing: no config.json and no .gguf file here");
    render(ModelPicker, { mode: "pick", onselect });
    await waitFor(() => expect(screen.getAllByTestId("model-option")).toHaveLength(2));
    expect(onselect).not.toHaveBeenCalled();
    const input = screen.getByTestId("model-path-input");
    await fireEvent.input(input, { target: { value: "/tmp/nothing" } });
    await fireEvent.click(screen.getByTestId("model-path-add"));
    expect(m.modelsAdd).toHaveBeenCalledWith("/tmp/nothing", false);
    const err = await screen.findByTestId("model-add-error");
    expect(err.getAttribute("role")).toBe("alert");
    expect(err.textContent).toContain("no config.json and no .gguf file here");

    m.modelsAdd.mockResolvedValueOnce(QWEN);
    await fireEvent.input(input, { target: { value: QWEN.path } });
    await fireEvent.click(screen.getByTestId("model-path-add"));
    await waitFor(() => expect(onselect).toHaveBeenCalledWith(QWEN));
    expect(screen.queryByTestId("model-add-error")).toBeNull();
  });

  it("looks a hub model up, then downloads it with live progress", async () => {
    const onselect = vi.fn();
    m.modelsList.mockResolvedValue([SMOL, QWEN]);
    m.hubInfo.mockResolvedValue({
      repo: "HuggingFaceTB/SmolLM2-360M-Instruct",
      revision: "a1b2c3d4e5f6",
      files: [
        { path: "config.json", size: 861, sha256: null },
        { path: "model.safetensors", size: 723_642_240, sha256: "4f1c" },
      ],
      total_bytes: 723_643_101,
      license: "apache-2.0",
      gated: false,
    });
    let finish: (v: typeof QWEN) => void = () => {};
    m.hubDownload.mockReturnValue(new Promise((ok) => (finish = ok)));
    render(ModelPicker, { mode: "pick", onselect });
    // the curated list: memory with fits in words, a gated model marked
    const rows = await screen.findAllByTestId("curated-model");
    expect(rows[1].textContent).toContain("too big");
    expect(rows[1].textContent).toContain("gated");
    await fireEvent.click(within(rows[0]).getByTestId("curated-get"));
    expect(m.hubInfo).toHaveBeenCalledWith("HuggingFaceTB/SmolLM2-360M-Instruct");
    const info = await screen.findByTestId("hub-info");
    expect(info.textContent).toContain("apache-2.0");
    expect(info.textContent).toContain("690.1 MiB");
    expect(info.textContent).toContain("2 files");

    await fireEvent.click(screen.getByTestId("hub-download"));
    await waitFor(() => expect(m.hubDownload).toHaveBeenCalledWith("HuggingFaceTB/SmolLM2-360M-Instruct"));
    expect(listen).toHaveBeenCalled();
    emit({ repo: "HuggingFaceTB/SmolLM2-360M-Instruct", files_total: 6, files_done: 2, bytes_total: 723_643_101, bytes_done: 361_821_550, bytes_per_s: 12.5 * 2 ** 20, eta_s: 27.6 });
    emit({ repo: "someone/else", files_total: 1, files_done: 0, bytes_total: 10, bytes_done: 9, bytes_per_s: 1, eta_s: 1 });
    const bar = await screen.findByTestId("download-progress");
    await waitFor(() => expect(bar.textContent).toContain("12.5 MiB/s"));
    expect(bar.textContent).toContain("345.1 MiB of 690.1 MiB (50 %)");
    expect(bar.textContent).toContain("ETA 28 s");
    expect((bar.querySelector("progress") as HTMLProgressElement).value).toBeCloseTo(50, 0);

    finish({ ...QWEN, id: "smollm2-360m", name: "SmolLM2 360M Instruct" });
    await waitFor(() => expect(onselect).toHaveBeenCalledWith(expect.objectContaining({ id: "smollm2-360m" })));
    expect(unlisten).toHaveBeenCalled();
    expect(screen.queryByTestId("download-progress")).toBeNull();
  });

  it("lists without choosing in manage mode", async () => {
    const onselect = vi.fn();
    render(ModelPicker, { mode: "manage", onselect });
    await screen.findByTestId("model-option");
    expect(screen.queryByRole("radio")).toBeNull();
    expect(onselect).not.toHaveBeenCalled();
  });
});

describe("DatasetPicker", () => {
  it("registers a sample with datasetsAdd and selects it", async () => {
    m.datasetsList.mockResolvedValue([]);
    m.datasetsAdd.mockResolvedValue(SAMPLE);
    const onselect = vi.fn();
    render(DatasetPicker, { mode: "pick", model: SMOL.id, seqLen: 256, onselect });
    await screen.findByTestId("datasets-empty");
    m.datasetsList.mockResolvedValue([SAMPLE]);
    await fireEvent.click(await screen.findByTestId("dataset-sample"));
    expect(m.datasetsAdd).toHaveBeenCalledWith(SAMPLE.path);
    await waitFor(() => expect(onselect).toHaveBeenCalledWith(SAMPLE));
    await waitFor(() => expect(m.datasetsInspect).toHaveBeenCalledWith(SAMPLE.id, SMOL.id, 256, 5));
    expect(await screen.findByTestId("dataset-preview")).toBeTruthy();
  });

  it("adds a file by path, forcing a format when asked, and shows a refusal", async () => {
    m.datasetsAdd.mockRejectedValueOnce("/data/x.csv: line 1: no column named `text` (columns: a, b)");
    render(DatasetPicker, { mode: "pick", model: null });
    await fireEvent.input(screen.getByTestId("dataset-path-input"), { target: { value: "/data/x.csv" } });
    await fireEvent.change(screen.getByTestId("dataset-format-select"), { target: { value: "csv" } });
    await fireEvent.click(screen.getByTestId("dataset-path-add"));
    expect(m.datasetsAdd).toHaveBeenCalledWith("/data/x.csv", "csv");
    const err = await screen.findByTestId("dataset-add-error");
    expect(err.textContent).toContain("line 1: no column named `text`");
  });

  it("inspects through the model picked on the Datasets screen", async () => {
    m.modelsList.mockResolvedValue([SMOL, QWEN]);
    render(DatasetPicker, { mode: "manage" });
    const select = (await screen.findByTestId("dataset-model-select")) as HTMLSelectElement;
    await waitFor(() => expect(m.datasetsInspect).toHaveBeenCalledWith(SAMPLE.id, SMOL.id, 512, 5));
    await fireEvent.change(select, { target: { value: QWEN.id } });
    await waitFor(() => expect(m.datasetsInspect).toHaveBeenLastCalledWith(SAMPLE.id, QWEN.id, 512, 5));
    await fireEvent.input(screen.getByTestId("dataset-seq-len"), { target: { value: "128" } });
    await waitFor(() => expect(m.datasetsInspect).toHaveBeenLastCalledWith(SAMPLE.id, QWEN.id, 128, 5));
    // the sample is registered already: choosing it does not register it twice
    await fireEvent.click(screen.getByTestId("dataset-sample"));
    expect(m.datasetsAdd).not.toHaveBeenCalled();
  });
});
