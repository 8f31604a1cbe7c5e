import { describe, expect, it } from "vitest";
import { METRIC_ROWS, bestIndices, keySettings, runLabel, sharedModel } from "./compare";
import { config, runView } from "./fixtures";

describe("bestIndices", () => {
  it("picks the lowest value by default and the highest for throughput", () => {
    expect([...bestIndices([2.1, 1.9, 2.5], false)]).toEqual([1]);
    expect([...bestIndices([900, 1200, 1100], true)]).toEqual([1]);
  });

  it("marks every run of a tie and ignores missing values", () => {
    expect([...bestIndices([1.5, null, 1.5, 2], false)].sort()).toEqual([0, 2]);
  });

  it("marks nothing when all runs agree", () => {
    expect(bestIndices([1.5, 1.5, null], false).size).toBe(0);
  });

  it("marks nothing when fewer than two runs have a value", () => {
    expect(bestIndices([null, 1.2], false).size).toBe(0);
    expect(bestIndices([null, undefined], true).size).toBe(0);
  });

  it("applies each metric row's direction to RunViews", () => {
    const a = runView("a", { best_eval_loss: 1.2, tokens_per_s: 500, peak_mem_bytes: 3e9 });
    const b = runView("b", { best_eval_loss: 1.4, tokens_per_s: 800, peak_mem_bytes: 2e9 });
    const best = (id: string) => {
      const row = METRIC_ROWS.find((r) => r.id === id)!;
      return [...bestIndices([a, b].map(row.value), row.higherBetter)];
    };
    expect(best("best_eval")).toEqual([0]);
    expect(best("tps")).toEqual([1]);
    expect(best("peak_mem")).toEqual([1]);
  });
});

describe("legend labels", () => {
  it("name the run, method and key settings", () => {
    const r = runView("run-7", { method: "qlora", config: config({ lr: 0.0002, seq_len: 1024, r: 8 }) });
    expect(keySettings(r)).toEqual({ lr: 0.0002, r: 8, seqLen: 1024 });
    expect(runLabel(r)).toBe("run-7 · qlora · lr=0.0002 r=8 seq_len=1024");
  });

  it("leave out the LoRA rank for methods without one", () => {
    const r = runView("run-8", { method: "ia3", config: config({ lr: null, seq_len: 256, r: 8 }) });
    expect(runLabel(r)).toBe("run-8 · ia3 · seq_len=256");
  });
});

describe("sharedModel", () => {
  it("is the model when all runs share it, else null", () => {
    expect(sharedModel([runView("a"), runView("b")])).toBe("smollm2-135m");
    expect(sharedModel([runView("a"), runView("b", { model: "other" })])).toBeNull();
  });
});
