import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import { beforeEach, describe, expect, it, vi } from "vitest";
import type { QueueUpdate, RunMetrics, RunView } from "../lib/ipc";
import { runView } from "../components/runs/fixtures";

const h = vi.hoisted(() => ({
  handler: null as ((u: QueueUpdate) => void) | null,
}));
const api = vi.hoisted(() => ({
  runMetrics: vi.fn<(id: string) => Promise<RunMetrics>>(),
  runShow: vi.fn<(id: string) => Promise<RunView>>(),
  runControl: vi.fn<(id: string, action: "pause" | "stop") => Promise<RunView>>(),
  runResume: vi.fn<(id: string) => Promise<RunView>>(),
  queuePositions: vi.fn(() => Promise.resolve([])),
}));
vi.mock("../lib/ipc", () => ({
  api,
  onQueue: vi.fn((handler: (u: QueueUpdate) => void) => {
    h.handler = handler;
    return Promise.resolve(() => {});
  }),
  reveal: vi.fn(),
}));

import Run from "./Run.svelte";
import { live } from "../lib/live.svelte";

function metrics(id: string, over: Partial<RunView> = {}): RunMetrics {
  return {
    run: runView(id, { status: "running", steps_done: 3, total_steps: 50, best_eval_loss: null, adapter_bytes: null, ...over }),
    train: { step: [1, 2, 3], loss: [3, 2.8, 2.6], lr: [1e-4, 1e-4, 1e-4], grad_norm: [1, 1, 1], tokens_per_s: [800, 800, 800], mem_bytes: [2 ** 30, 2 ** 30, 2 ** 30], tokens: [100, 200, 300], time_s: [1, 2, 3] },
    eval: { step: [0], loss: [3.2], perplexity: [24.5], tokens: [0], time_s: [0] },
    named: [],
    samples: [],
    logs: [{ step: 0, level: "info", message: "loaded 40 records" }],
    checkpoints: [],
  };
}

function emit(u: QueueUpdate) {
  if (!h.handler) throw new Error("live store not subscribed");
  h.handler(u);
}

describe("Run screen", () => {
  beforeEach(() => {
    vi.clearAllMocks();
    live.start();
  });

  it("shows history, then live steps, eval samples and the end of the run", async () => {
    api.runMetrics.mockResolvedValue(metrics("run-5"));
    api.runShow.mockResolvedValue(runView("run-5", { status: "completed", steps_done: 5, total_steps: 50, first_eval_loss: 3.2, best_eval_loss: 2.1 }));
    render(Run, { arg: "run-5" });
    await waitFor(() => expect(screen.getByTestId("loss-chart").dataset.points).toBe("3"));
    expect(screen.getByTestId("run-status").dataset.status).toBe("running");
    expect(screen.getByTestId("run-status").textContent).toContain("Running");
    expect(screen.getByTestId("run-step").textContent).toBe("3 / 50");
    expect(screen.getByTestId("run-stop")).toBeTruthy();
    expect(screen.queryByTestId("run-export")).toBeNull();

    emit({
      update: "events",
      run_id: "run-5",
      events: [
        { event: "step", step: 3, loss: 2.6, lr: 1e-4, grad_norm: 1, tokens_per_s: 810, mem_bytes: 2 ** 30, epoch: 0, tokens: 300, metrics: {} },
        { event: "step", step: 4, loss: 2.5, lr: 1e-4, grad_norm: 1, tokens_per_s: 820, mem_bytes: 2 ** 30, epoch: 0, tokens: 400, metrics: {} },
        { event: "step", step: 5, loss: 2.4, lr: 1e-4, grad_norm: 1, tokens_per_s: 830, mem_bytes: 2 ** 30, epoch: 0, tokens: 500, metrics: {} },
        { event: "eval", step: 5, eval_loss: 2.1, perplexity: 8.2, metrics: {} },
        { event: "sample", step: 5, prompt: "Name a colour", text: "Blue." },
        { event: "checkpoint", step: 5, path: "/r/ckpt", best: true },
      ],
    });
    await waitFor(() => expect(screen.getByTestId("loss-chart").dataset.points).toBe("5")); // step 3 deduped
    expect(screen.getByTestId("run-step").textContent).toBe("5 / 50");
    expect(screen.getByTestId("run-tps").textContent).toContain("830 tokens/s");
    expect(screen.getByTestId("run-samples").textContent).toContain("Blue.");
    expect(screen.getByTestId("run-export")).toBeTruthy();

    emit({ update: "ended", run_id: "run-5", status: "completed", error: null });
    await waitFor(() => expect(screen.getByTestId("run-status").dataset.status).toBe("completed"));
    expect(screen.queryByTestId("run-stop")).toBeNull();
    await waitFor(() => expect(screen.getByTestId("run-summary").textContent).toContain("3.2000 → 2.1000"));
    expect(api.runShow).toHaveBeenCalledWith("run-5");
  });

  it("stops a running run and resumes a paused one", async () => {
    api.runMetrics.mockResolvedValue(metrics("run-6"));
    api.runControl.mockResolvedValue(runView("run-6", { status: "cancelled" }));
    api.runResume.mockResolvedValue(runView("run-6", { status: "queued" }));
    render(Run, { arg: "run-6" });
    await waitFor(() => expect(screen.getByTestId("run-stop")).toBeTruthy());
    await fireEvent.click(screen.getByTestId("run-stop"));
    expect(api.runControl).toHaveBeenCalledWith("run-6", "stop");
    await waitFor(() => expect(screen.getByTestId("run-status").dataset.status).toBe("cancelled"));
    await fireEvent.click(screen.getByTestId("run-resume"));
    expect(api.runResume).toHaveBeenCalledWith("run-6");
    await waitFor(() => expect(screen.getByTestId("run-status").dataset.status).toBe("queued"));
    expect(screen.getByTestId("run-pause")).toBeTruthy();
  });

  it("a resume shows Queued even though the backend's reply still says paused", async () => {
    api.runMetrics.mockResolvedValue(metrics("run-7", { status: "paused" }));
    // the queue tells of the resume before run_resume returns the database row (still paused)
    api.runResume.mockImplementation(async () => {
      emit({ update: "queued", run_id: "run-7", device: "cpu", position: 0 });
      return runView("run-7", { status: "paused" });
    });
    render(Run, { arg: "run-7" });
    await waitFor(() => expect(screen.getByTestId("run-resume")).toBeTruthy());
    await fireEvent.click(screen.getByTestId("run-resume"));
    await waitFor(() => expect(api.runResume).toHaveBeenCalledTimes(1));
    await waitFor(() => expect(screen.getByTestId("run-status").dataset.status).toBe("queued"));
    expect(screen.queryByTestId("run-resume")).toBeNull();
    expect(screen.getByTestId("run-pause")).toBeTruthy();
  });

  it("reads the summary again each time the run ends, even with the same status", async () => {
    api.runMetrics.mockResolvedValue(metrics("run-8"));
    api.runShow.mockResolvedValue(runView("run-8", { status: "paused", steps_done: 4, total_steps: 50, best_eval_loss: 2.5 }));
    render(Run, { arg: "run-8" });
    await waitFor(() => expect(screen.getByTestId("run-step").textContent).toBe("3 / 50"));
    emit({ update: "ended", run_id: "run-8", status: "paused", error: null });
    await waitFor(() => expect(api.runShow).toHaveBeenCalledTimes(1));
    await waitFor(() => expect(screen.getByTestId("run-summary").textContent).toContain("2.5000"));

    api.runShow.mockResolvedValue(runView("run-8", { status: "paused", steps_done: 6, total_steps: 50, best_eval_loss: 2.25 }));
    emit({ update: "queued", run_id: "run-8", device: "cpu", position: 0 });
    emit({
      update: "events",
      run_id: "run-8",
      events: [{ event: "started", step: 4, total_steps: 50, train_records: 10, eval_records: 2, trainable_params: 1, total_params: 2, resumed_from: 4 }],
    });
    await waitFor(() => expect(screen.getByTestId("run-status").dataset.status).toBe("running"));
    emit({ update: "ended", run_id: "run-8", status: "paused", error: null });
    await waitFor(() => expect(api.runShow).toHaveBeenCalledTimes(2));
    await waitFor(() => expect(screen.getByTestId("run-summary").textContent).toContain("2.2500"));
  });

  it("shows a backend error as-is", async () => {
    api.runMetrics.mockRejectedValue("run `run-9` not found");
    render(Run, { arg: "run-9" });
    await waitFor(() => expect(screen.getByRole("alert").textContent).toContain("run `run-9` not found"));
  });
});
