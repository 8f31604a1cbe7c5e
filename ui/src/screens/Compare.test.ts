import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it, vi } from "vitest";
import type { ChatAnswer, ReportFiles, RunMetrics, RunView } from "../lib/ipc";
import { runView } from "../components/runs/fixtures";

const api = vi.hoisted(() => ({
  runMetrics: vi.fn<(id: string) => Promise<RunMetrics>>(),
  runsList: vi.fn<() => Promise<RunView[]>>(),
  chat: vi.fn<(model: string, adapters: (string | null)[], prompt: string, maxTokens: number, temperature: number) => Promise<ChatAnswer[]>>(),
  runsReport: vi.fn<(ids: string[], by: "step" | "tokens") => Promise<ReportFiles>>(),
  queuePositions: vi.fn(() => Promise.resolve([])),
}));
const reveal = vi.hoisted(() => vi.fn(() => Promise.resolve()));
vi.mock("../lib/ipc", () => ({ api, reveal, onQueue: vi.fn(() => Promise.resolve(() => {})) }));

import Compare from "./Compare.svelte";

function metrics(run: RunView, offset: number): RunMetrics {
  const step = [1, 2, 3, 4];
  return {
    run,
    train: {
      step,
      loss: step.map((s) => 3 - s * 0.1 - offset),
      lr: step.map(() => 1e-4),
      grad_norm: step.map(() => 1),
      tokens_per_s: step.map(() => 1000),
      mem_bytes: step.map(() => 2 ** 30),
      tokens: step.map((s) => s * (100 + offset * 10)),
      time_s: step.map((s) => s * 1.5 + offset),
    },
    eval: { step: [0, 4], loss: [3.2, 2.5 - offset], perplexity: [24, 12], tokens: [0, 400], time_s: [0, 6] },
    named: [],
    samples: [],
    logs: [],
    checkpoints: [],
  };
}

const A = runView("run-a", { best_eval_loss: 1.4, tokens_per_s: 900, peak_mem_bytes: 3 * 2 ** 30 });
const B = runView("run-b", { method: "qlora", best_eval_loss: 1.2, tokens_per_s: 700, peak_mem_bytes: 2 * 2 ** 30 });

describe("Compare screen", () => {
  beforeEach(() => {
    vi.clearAllMocks();
    api.runMetrics.mockImplementation((id) => Promise.resolve(id === "run-a" ? metrics(A, 0) : metrics(B, 1)));
  });

  it("overlays the objectives' metrics, one chart per name any run has", async () => {
    const dpo = (run: RunView, acc: number): RunMetrics => ({
      ...metrics(run, 0),
      named: [{ name: "reward_accuracy", train_step: [1, 2], train: [0.5, acc], eval_step: [0, 2], eval: [0, acc] }],
    });
    api.runMetrics.mockImplementation((id) => Promise.resolve(id === "run-a" ? dpo(A, 0.75) : metrics(B, 1)));
    render(Compare, { arg: "run-a,run-b" });
    const chart = await screen.findByTestId("compare-named-reward_accuracy");
    expect(Number(chart.dataset.points)).toBe(3);
    expect(chart.textContent).toContain("Reward accuracy");
  });

  it("marks the best value of each metric with text, not colour only", async () => {
    render(Compare, { arg: "run-a,run-b" });
    const table = await screen.findByTestId("compare-table");
    const cells = (metric: string) => within(table.querySelector(`tr[data-metric="${metric}"]`) as HTMLElement).getAllByRole("cell");
    const best = cells("best_eval");
    expect(best[0].dataset.best).toBeUndefined();
    expect(best[1].dataset.best).toBe("true");
    expect(best[1].textContent).toContain("★");
    expect(best[1].querySelector("strong")?.textContent).toBe("1.2000");
    const tps = cells("tps");
    expect(tps[0].dataset.best).toBe("true"); // higher throughput wins
    expect(tps[1].dataset.best).toBeUndefined();
  });

  it("switches the x axis and overlays train and eval of every run", async () => {
    render(Compare, { arg: "run-a,run-b" });
    const chart = await screen.findByTestId("compare-chart");
    expect(chart.dataset.series).toBe("4");
    expect(chart.dataset.axis).toBe("step");
    expect(chart.dataset.points).toBe("5"); // steps 0..4
    await fireEvent.click(screen.getByTestId("compare-axis-tokens"));
    expect(chart.dataset.axis).toBe("tokens");
    // tokens: run-a 0,100..400; run-b 0,110..440 and eval at 400.
    expect(chart.dataset.points).toBe("9");
    await fireEvent.click(screen.getByTestId("compare-axis-time"));
    expect(chart.dataset.axis).toBe("time");
    expect(screen.getByTestId("compare-axis-time").getAttribute("aria-pressed")).toBe("true");
  });

  it("asks every run the same prompt and shows the answers side by side", async () => {
    api.chat.mockResolvedValue([
      { adapter: "run-a", text: "Paris.", tokens: 3, seconds: 0.4, tokens_per_s: 7.5, switch_s: 0 },
      { adapter: "run-b", text: "It is Paris.", tokens: 5, seconds: 0.5, tokens_per_s: 10, switch_s: 0.1 },
    ]);
    render(Compare, { arg: "run-a,run-b" });
    const prompt = await screen.findByTestId("compare-prompt");
    await fireEvent.input(prompt, { target: { value: "Capital of France?" } });
    await fireEvent.click(screen.getByTestId("compare-generate"));
    expect(api.chat).toHaveBeenCalledWith("smollm2-135m", ["run-a", "run-b"], "Capital of France?", 64, 0);
    const answers = await screen.findByTestId("compare-answers");
    expect(answers.textContent).toContain("Paris.");
    expect(answers.textContent).toContain("It is Paris.");
  });

  it("says so when the runs have different base models", async () => {
    api.runMetrics.mockImplementation((id) => Promise.resolve(id === "run-a" ? metrics(A, 0) : metrics({ ...B, model: "qwen" }, 1)));
    render(Compare, { arg: "run-a,run-b" });
    expect(await screen.findByTestId("compare-models-differ")).toBeTruthy();
    expect(screen.queryByTestId("compare-generate")).toBeNull();
  });

  it("writes a report and reveals it", async () => {
    api.runsReport.mockResolvedValue({ markdown: "/data/reports/r1/report.md", charts: [], skipped: [] });
    render(Compare, { arg: "run-a,run-b" });
    await screen.findByTestId("compare-chart");
    await fireEvent.click(screen.getByTestId("compare-axis-tokens"));
    await fireEvent.click(screen.getByTestId("compare-report"));
    expect(api.runsReport).toHaveBeenCalledWith(["run-a", "run-b"], "tokens");
    expect((await screen.findByTestId("compare-report-path")).textContent).toContain("/data/reports/r1/report.md");
    await fireEvent.click(screen.getByTestId("compare-reveal"));
    expect(reveal).toHaveBeenCalledWith("/data/reports/r1/report.md");
  });

  it("offers a picker with fewer than two runs", async () => {
    api.runsList.mockResolvedValue([A, B]);
    render(Compare, { arg: "run-a" });
    const picks = await screen.findAllByTestId("compare-pick");
    expect((picks[0] as HTMLInputElement).checked).toBe(true);
    const go = screen.getByTestId("compare-go") as HTMLButtonElement;
    expect(go.disabled).toBe(true);
    await fireEvent.click(picks[1]);
    expect(go.disabled).toBe(false);
    await fireEvent.click(go);
    expect(location.hash).toBe(`#compare/${encodeURIComponent("run-a,run-b")}`);
  });
});
