import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { QWEN, SAMPLE, SMOL, estimateReport, inspection, methodRows, schema, trainConfig, withSets } from "../components/wizard/fixtures";

vi.mock("../lib/ipc", () => ({
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
    methodsTable: vi.fn(),
    settingsSchema: vi.fn(),
    estimate: vi.fn(),
    runsList: vi.fn(),
    runStart: vi.fn(),
  },
  onDownload: vi.fn(async () => () => {}),
  pickPath: vi.fn(async () => null),
}));

import { api } from "../lib/ipc";
import { draft, resetDraft } from "../lib/wizard-state.svelte";
import NewRun from "./NewRun.svelte";

const m = vi.mocked(api);
const SAMPLE_FILE = { name: "whetstone-demo-extract", path: SAMPLE.path, description: "Extract a person's name, age and city", records: 300 };

beforeEach(() => {
  localStorage.clear();
  resetDraft();
  vi.clearAllMocks();
  location.hash = "#new";
  m.modelsList.mockResolvedValue([SMOL]);
  m.modelsCurated.mockResolvedValue([]);
  m.datasetsList.mockResolvedValue([]);
  m.datasetsSamples.mockResolvedValue([SAMPLE_FILE]);
  m.datasetsAdd.mockImplementation(async () => {
    m.datasetsList.mockResolvedValue([SAMPLE]);
    return SAMPLE;
  });
  m.datasetsInspect.mockResolvedValue(inspection());
  m.methodsTable.mockResolvedValue(methodRows());
  m.settingsSchema.mockImplementation(async (_method, sets) => schema(sets));
  m.estimate.mockImplementation(async (_model, method, sets) =>
    estimateReport(method as "lora", { config: withSets(trainConfig(method as "lora"), sets) }),
  );
  m.runsList.mockResolvedValue([]);
});

const next = () => screen.getByTestId("wizard-next") as HTMLButtonElement;

describe("New run wizard", () => {
  it("keeps Next disabled until a model is chosen", async () => {
    m.modelsList.mockResolvedValue([SMOL, QWEN]);
    render(NewRun);
    expect(screen.getByTestId("wizard-step-model")).toBeTruthy();
    await waitFor(() => expect(screen.getAllByTestId("model-option")).toHaveLength(2));
    expect(next().disabled).toBe(true);
    expect(screen.getByText("Choose a model to continue.")).toBeTruthy();
    expect((within(screen.getByTestId("stepper-dataset")).getByRole("button") as HTMLButtonElement).disabled).toBe(true);
    expect(screen.getByTestId("stepper-model").dataset.state).toBe("current");
    expect(within(screen.getByTestId("stepper-model")).getByRole("button").getAttribute("aria-current")).toBe("step");
    expect((screen.getByTestId("wizard-back") as HTMLButtonElement).disabled).toBe(true);

    const qwen = screen.getAllByTestId("model-option").find((o) => o.dataset.id === QWEN.id)!;
    await fireEvent.click(within(qwen).getByRole("radio"));
    expect(next().disabled).toBe(false);
    expect(draft.model?.id).toBe(QWEN.id);
    await fireEvent.click(next());
    expect(screen.getByTestId("wizard-step-dataset")).toBeTruthy();
    expect(screen.getByTestId("stepper-model").dataset.state).toBe("done");
    expect(screen.getByTestId("stepper-model").textContent).toContain("Qwen2.5 0.5B Instruct");
  });

  it("goes from the demo model to a started run, keeping choices when going back", async () => {
    m.runStart.mockResolvedValue({ id: "run-7" } as Awaited<ReturnType<typeof api.runStart>>);
    render(NewRun);
    // the demo model alone is chosen for you
    await waitFor(() => expect(next().disabled).toBe(false));
    expect((within(screen.getByTestId("model-option")).getByRole("radio") as HTMLInputElement).checked).toBe(true);
    await fireEvent.click(next());

    // dataset: register the shipped sample, then inspect it through the model at seq_len 512
    expect(next().disabled).toBe(true);
    await fireEvent.click(await screen.findByTestId("dataset-sample"));
    expect(m.datasetsAdd).toHaveBeenCalledWith(SAMPLE.path);
    await waitFor(() => expect(m.datasetsInspect).toHaveBeenCalledWith(SAMPLE.id, SMOL.id, 512, 5));
    expect(await screen.findByTestId("dataset-split")).toBeTruthy();
    expect(screen.getByTestId("dataset-split").textContent).toBe("270 train / 30 eval");
    expect(next().disabled).toBe(false);
    await fireEvent.click(next());

    // goal: supervised fine-tuning for an alpaca file; the preference goals say what they need
    expect(screen.getByTestId("wizard-step-goal")).toBeTruthy();
    const goal = (o: string) => screen.getAllByTestId("goal-option").find((g) => g.dataset.objective === o)!;
    expect(goal("sft").dataset.selected).toBe("true");
    expect((within(goal("dpo")).getByRole("radio") as HTMLInputElement).disabled).toBe(true);
    expect(goal("dpo").textContent).toContain("Needs preference pairs");
    await fireEvent.click(next());

    // method: the recommended row is pre-selected
    expect(screen.getByTestId("wizard-step-method")).toBeTruthy();
    await screen.findByTestId("method-table");
    expect(m.methodsTable.mock.calls[0][0]).toBe(SMOL.id);
    const lora = screen.getAllByTestId("method-row").find((r) => r.dataset.method === "lora")!;
    expect((within(lora).getByRole("radio") as HTMLInputElement).checked).toBe(true);
    expect(draft.method).toBe("lora");

    // back to the dataset and forward again: the choice is still there
    await fireEvent.click(screen.getByTestId("wizard-back"));
    await fireEvent.click(screen.getByTestId("wizard-back"));
    expect(screen.getByTestId("wizard-step-dataset")).toBeTruthy();
    await waitFor(() =>
      expect((within(screen.getByTestId("dataset-option")).getByRole("radio") as HTMLInputElement).checked).toBe(true),
    );
    await fireEvent.click(next());
    await fireEvent.click(next());
    await screen.findByTestId("method-table");
    await fireEvent.click(next());

    // settings: the Quick preset
    expect(screen.getByTestId("wizard-step-settings")).toBeTruthy();
    await fireEvent.click(screen.getByTestId("preset-quick"));
    await waitFor(() => expect(m.estimate.mock.calls.some((c) => c[2].includes("max_steps=60"))).toBe(true));
    await fireEvent.click(next());

    // review: what will happen, then Ctrl+Enter starts it
    expect(screen.getByTestId("wizard-step-review")).toBeTruthy();
    expect(screen.getByTestId("review-method").textContent).toContain("LoRA");
    await waitFor(() => expect(screen.getByTestId("review-trainable").textContent).toContain("921,600"));
    expect(screen.getByTestId("review-time").textContent).toContain("rough");
    // 60 steps × 4 × 256 tokens at 400 tokens/s ≈ 154 s
    expect(screen.getByTestId("review-time").textContent).toContain("3 min");
    await waitFor(() => expect(screen.getByTestId("review-settings").textContent).toContain("max_steps=60"));
    await fireEvent.keyDown(window, { key: "Enter", ctrlKey: true });
    await waitFor(() => expect(m.runStart).toHaveBeenCalledTimes(1));
    const [model, dataset, method, sets] = m.runStart.mock.calls[0];
    expect([model, dataset, method]).toEqual([SMOL.id, SAMPLE.id, "lora"]);
    expect([...sets].sort()).toEqual(["eval_every=20", "max_steps=60", "save_every=20", "seq_len=256"]);
    await waitFor(() => expect(location.hash).toBe("#run/run-7"));
  });

  it("suggests DPO for preference pairs and sends the goal as the objective", async () => {
    m.runStart.mockResolvedValue({ id: "run-9" } as Awaited<ReturnType<typeof api.runStart>>);
    const PAIRS = { ...SAMPLE, id: "pairs", name: "pairs", format: "preference" };
    Object.assign(draft, { step: 2, model: SMOL, dataset: PAIRS });
    render(NewRun);
    const goal = (o: string) => screen.getAllByTestId("goal-option").find((g) => g.dataset.objective === o)!;
    await waitFor(() => expect(goal("dpo").dataset.selected).toBe("true"));
    expect(draft.sets).toContain("objective=dpo");
    await fireEvent.click(within(goal("orpo")).getByRole("radio"));
    expect(draft.sets).toContain("objective=orpo");
    expect(goal("orpo").textContent).toContain("cheapest");
    // a dataset that cannot train the chosen goal brings the goal back to one it can
    draft.dataset = SAMPLE;
    await waitFor(() => expect(draft.sets.some((p) => p.startsWith("objective="))).toBe(false));
    expect(goal("sft").dataset.selected).toBe("true");
  });

  it("sends the device chosen in Settings unless a pair names one", async () => {
    m.runStart.mockResolvedValue({ id: "run-8" } as Awaited<ReturnType<typeof api.runStart>>);
    localStorage.setItem("whetstone.device", "cuda:1");
    Object.assign(draft, { step: 5, model: SMOL, dataset: SAMPLE, method: "lora", methodChosen: true });
    const { unmount } = render(NewRun);
    await waitFor(() => expect(m.estimate).toHaveBeenCalled());
    expect(m.estimate.mock.calls[0][3]).toBe("cuda:1");
    await fireEvent.click(screen.getByTestId("wizard-start"));
    await waitFor(() => expect(m.runStart).toHaveBeenCalledTimes(1));
    expect(m.runStart.mock.calls[0][3]).toEqual([...draft.sets, "device=cuda:1"]);
    unmount();

    // a device named in the Advanced panel wins, even `cpu` (the schema's default)
    vi.clearAllMocks();
    Object.assign(draft, { step: 5, sets: [...draft.sets, "device=cpu"] });
    render(NewRun);
    await waitFor(() => expect(m.estimate).toHaveBeenCalled());
    expect(m.estimate.mock.calls[0][3]).toBe("cpu");
    await waitFor(() => expect(screen.getByTestId("review-settings").textContent).toContain("device=cpu"));
    await fireEvent.click(screen.getByTestId("wizard-start"));
    await waitFor(() => expect(m.runStart).toHaveBeenCalledTimes(1));
    const sent = m.runStart.mock.calls[0][3];
    expect(sent.filter((p) => p.startsWith("device="))).toEqual(["device=cpu"]);
  });

  it("shows why a run could not start", async () => {
    Object.assign(draft, { step: 5, model: SMOL, dataset: SAMPLE, method: "lora", methodChosen: true });
    m.runStart.mockRejectedValue("dataset whetstone-demo-extract: line 12: 1 record is longer than seq_len 256 (set truncate=true)");
    render(NewRun);
    await fireEvent.click(screen.getByTestId("wizard-start"));
    const box = await screen.findByTestId("start-error");
    expect(box.getAttribute("role")).toBe("alert");
    expect(box.textContent).toContain("line 12: 1 record is longer than seq_len 256");
    expect(location.hash).toBe("#new");
  });

  it("says when the run does not fit and offers the one change that makes it fit", async () => {
    const usable = Math.floor((8 * 2 ** 30) / 10) * 9;
    m.estimate.mockImplementation(async (_model, method, sets) => {
      const ckpt = sets.includes("gradient_checkpointing=true");
      const bytes = method === "qlora" ? 5e9 : ckpt ? 6.5e9 : 9e9;
      return estimateReport(method as "lora", { est_memory_bytes: bytes, fits_device: bytes <= usable, usable_bytes: usable });
    });
    Object.assign(draft, { step: 5, model: SMOL, dataset: SAMPLE, method: "full", methodChosen: true });
    render(NewRun);
    const fix = await screen.findByTestId("review-fix");
    expect(fix.textContent).toContain("Does not fit.");
    await waitFor(() => expect(fix.textContent).toContain("gradient checkpointing"));
    expect(screen.getByTestId("review-memory-state").textContent).toContain("does not fit");
    await fireEvent.click(screen.getByTestId("review-apply-fix"));
    expect(draft.sets).toContain("gradient_checkpointing=true");
    await waitFor(() => expect(screen.queryByTestId("review-fix")).toBeNull());
  });
});
