import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { estimateReport, schema } from "./fixtures";

vi.mock("../../lib/ipc", () => ({
  api: {
    settingsSchema: vi.fn(),
    estimate: vi.fn(),
  },
}));

import { api } from "../../lib/ipc";
import SettingsPanel from "./SettingsPanel.svelte";

const settingsSchema = vi.mocked(api.settingsSchema);
const estimate = vi.mocked(api.estimate);

const BALANCED = ["epochs=1", "eval_every=50", "save_every=50", "seq_len=512"];

/** The pairs of the latest estimate call. */
function lastSets(): string[] {
  const call = estimate.mock.calls.at(-1);
  if (!call) throw new Error("estimate was not called");
  return [...call[2]];
}

beforeEach(() => {
  localStorage.clear();
  settingsSchema.mockReset();
  estimate.mockReset();
  settingsSchema.mockImplementation(async (_m, sets) => schema(sets));
  estimate.mockImplementation(async () => estimateReport("lora"));
});

describe("SettingsPanel", () => {
  it("turns a preset into key=value pairs and checks them with the estimate", async () => {
    render(SettingsPanel, { model: "smollm2-135m-instruct-q4-1", method: "lora", sets: [...BALANCED] });
    expect(screen.getByTestId("preset-balanced").getAttribute("aria-pressed")).toBe("true");
    await waitFor(() => expect(estimate).toHaveBeenCalledTimes(1));
    expect(lastSets()).toEqual(BALANCED);
    expect(estimate.mock.calls[0][0]).toBe("smollm2-135m-instruct-q4-1");
    expect(estimate.mock.calls[0][1]).toBe("lora");
    await waitFor(() => expect(screen.getByTestId("settings-estimate").textContent).toContain("921,600"));

    await fireEvent.click(screen.getByTestId("preset-quick"));
    expect(screen.getByTestId("preset-quick").getAttribute("aria-pressed")).toBe("true");
    expect(screen.getByTestId("preset-balanced").getAttribute("aria-pressed")).toBe("false");
    await waitFor(() => expect(estimate).toHaveBeenCalledTimes(2));
    expect(lastSets().sort()).toEqual(["eval_every=20", "max_steps=60", "save_every=20", "seq_len=256"]);

    await fireEvent.click(screen.getByTestId("preset-thorough"));
    await waitFor(() => expect(estimate).toHaveBeenCalledTimes(3));
    // Quick's max_steps is gone: Thorough trains for epochs
    expect(lastSets().sort()).toEqual(["epochs=3", "eval_every=100", "gradient_checkpointing=true", "save_every=100", "seq_len=1024"]);
  });

  it("makes an edited field a pair, and a reset removes it", async () => {
    render(SettingsPanel, { model: "smollm2-135m-instruct-q4-1", method: "lora", sets: [...BALANCED] });
    const toggle = screen.getByTestId("advanced-toggle");
    expect(toggle.getAttribute("aria-expanded")).toBe("false");
    await fireEvent.click(toggle);
    expect(toggle.getAttribute("aria-expanded")).toBe("true");
    const r = (await screen.findByTestId("setting-lora.r")) as HTMLInputElement;
    expect(r.value).toBe("8");
    expect(screen.getByText("LoRA rank: width of the low-rank update.")).toBeTruthy();
    await fireEvent.input(r, { target: { value: "16" } });
    await waitFor(() => expect(lastSets()).toContain("lora.r=16"));
    expect(lastSets()).toEqual([...BALANCED, "lora.r=16"]);

    const ckpt = screen.getByTestId("setting-gradient_checkpointing") as HTMLInputElement;
    await fireEvent.click(ckpt);
    await waitFor(() => expect(lastSets()).toContain("gradient_checkpointing=true"));
    // a preset key changed by hand: no preset is active any more
    expect(screen.getByTestId("preset-custom")).toBeTruthy();

    await fireEvent.change(screen.getByTestId("setting-schedule"), { target: { value: "linear" } });
    await waitFor(() => expect(lastSets()).toContain("schedule=linear"));

    // optional keys: an empty field means none
    await fireEvent.input(screen.getByTestId("setting-max_steps"), { target: { value: "" } });
    expect(lastSets()).not.toContain("max_steps=");

    await fireEvent.click(screen.getByTestId("setting-reset-lora.r"));
    await waitFor(() => expect(lastSets()).not.toContain("lora.r=16"));
    expect((screen.getByTestId("setting-lora.r") as HTMLInputElement).value).toBe("8");
  });

  it("hides keys that do not apply to the method until 'show all'", async () => {
    render(SettingsPanel, { model: "m", method: "lora", sets: [] });
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    await screen.findByTestId("setting-lora.r");
    expect(screen.queryByTestId("setting-ia3.targets")).toBeNull();
    const all = screen.getByTestId("settings-show-all");
    expect(all.textContent).toContain("2 more");
    await fireEvent.click(all);
    expect(screen.getByTestId("setting-ia3.targets")).toBeTruthy();
    expect(screen.getByTestId("setting-adapter.bottleneck")).toBeTruthy();
    expect(settingsSchema).toHaveBeenCalledWith("lora", []);
  });

  it("shows the backend's error naming the key, beside the form and at the field", async () => {
    const msg = "--set lora.r=0: `lora.r` must be a positive whole number, got 0";
    estimate.mockImplementation(async (_m, _method, sets) => {
      if (sets.includes("lora.r=0")) throw msg;
      return estimateReport("lora");
    });
    const onestimate = vi.fn();
    render(SettingsPanel, { model: "m", method: "lora", sets: [], onestimate });
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    const r = await screen.findByTestId("setting-lora.r");
    await fireEvent.input(r, { target: { value: "0" } });
    const box = await screen.findByTestId("settings-error");
    expect(box.getAttribute("role")).toBe("alert");
    expect(box.textContent).toContain(msg);
    expect(r.getAttribute("aria-invalid")).toBe("true");
    expect(onestimate).toHaveBeenLastCalledWith(null, msg);

    await fireEvent.input(r, { target: { value: "4" } });
    await waitFor(() => expect(screen.queryByTestId("settings-error")).toBeNull());
    expect(r.getAttribute("aria-invalid")).toBe("false");
    expect(onestimate.mock.calls.at(-1)?.[1]).toBeNull();
  });

  it("keeps a device the person names, even the schema default, and estimates on it", async () => {
    render(SettingsPanel, { model: "m", method: "lora", sets: [] });
    await waitFor(() => expect(estimate).toHaveBeenCalledTimes(1));
    expect(estimate.mock.calls[0][3]).toBeUndefined(); // no pair, no preference: the backend's best
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    const dev = (await screen.findByTestId("setting-device")) as HTMLInputElement;
    // not the schema's `cpu`: without a pair the run goes to the automatic choice
    expect(dev.value).toBe("auto");
    await fireEvent.change(dev, { target: { value: "cpu" } });
    await waitFor(() => expect(lastSets()).toEqual(["device=cpu"]));
    expect(estimate.mock.calls.at(-1)?.[3]).toBe("cpu");
    expect(dev.value).toBe("cpu");
    await fireEvent.click(screen.getByTestId("setting-reset-device"));
    await waitFor(() => expect(lastSets()).toEqual([]));
    expect(dev.value).toBe("auto");
  });

  it("shows and estimates on the device chosen in Settings when no pair names one", async () => {
    localStorage.setItem("whetstone.device", "cuda:1");
    render(SettingsPanel, { model: "m", method: "lora", sets: [] });
    await waitFor(() => expect(estimate).toHaveBeenCalledTimes(1));
    expect(estimate.mock.calls[0][3]).toBe("cuda:1");
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    expect(((await screen.findByTestId("setting-device")) as HTMLInputElement).value).toBe("cuda:1");
  });

  it("debounces: several quick edits make one estimate call", async () => {
    render(SettingsPanel, { model: "m", method: "lora", sets: [] });
    await waitFor(() => expect(estimate).toHaveBeenCalledTimes(1));
    await fireEvent.click(screen.getByTestId("advanced-toggle"));
    const r = await screen.findByTestId("setting-lora.r");
    for (const v of ["1", "12", "128"]) await fireEvent.input(r, { target: { value: v } });
    await waitFor(() => expect(estimate).toHaveBeenCalledTimes(2));
    expect(lastSets()).toEqual(["lora.r=128"]);
    await new Promise((ok) => setTimeout(ok, 400));
    expect(estimate).toHaveBeenCalledTimes(2);
  });
});
