import { describe, expect, it } from "vitest";
import { runView } from "../components/runs/fixtures";
import { rankRuns, scatter, settingsText, sweepSpec } from "./sweeps";

const runs = [
  runView("run-4", { settings: { lr: "0.001" }, best_eval_loss: 0.9, tokens_per_s: 800 }),
  runView("run-2", { settings: { lr: "0.0001" }, best_eval_loss: 1.2, tokens_per_s: 900 }),
  runView("run-3", { settings: { lr: "0.0003" }, best_eval_loss: null, tokens_per_s: null, status: "running" }),
];

describe("sweeps", () => {
  it("ranks by loss ascending and by throughput descending, runs without a value last", () => {
    expect(rankRuns(runs, "best").map((r) => r.id)).toEqual(["run-4", "run-2", "run-3"]);
    expect(rankRuns(runs, "tps").map((r) => r.id)).toEqual(["run-2", "run-4", "run-3"]);
  });

  it("puts numbers spanning a decade on a log axis and skips runs without a loss", () => {
    const s = scatter(runs, "lr");
    expect(s.axis.kind).toBe("log");
    expect(s.axis.ticks.map((t) => t.label)).toEqual(["0.0001", "0.0003", "0.001"]);
    expect(s.points.map((p) => p.id)).toEqual(["run-4", "run-2"]);
    const p4 = s.points[0];
    expect(p4.x).toBeCloseTo(1);
    expect(p4.y).toBeCloseTo(0);
    expect(s.points[1].x).toBeCloseTo(0);
    expect(s.axis.ticks[1].at).toBeCloseTo(Math.log10(3) / 1, 5);
  });

  it("treats other values as categories in first-seen order", () => {
    const cat = [
      runView("run-1", { settings: { schedule: "cosine" }, best_eval_loss: 1 }),
      runView("run-2", { settings: { schedule: "linear" }, best_eval_loss: 2 }),
    ];
    const s = scatter(cat, "schedule");
    expect(s.axis.kind).toBe("category");
    expect(s.points.map((p) => [p.x, p.y])).toEqual([[0, 0], [1, 1]]);
  });

  it("writes settings and specs as the backend takes them", () => {
    expect(settingsText({ lr: "1e-4", "lora.r": "8" })).toBe("lr=1e-4 lora.r=8");
    const spec = sweepSpec("m", "d", "lora", ["max_steps=3"], [{ key: "seed", values: ["1", "2"] }]);
    expect(spec).toEqual({ name: null, model: "m", data: "d", method: "lora", sets: ["max_steps=3"], grid: [{ key: "seed", values: ["1", "2"] }], random: 0, ranges: [] });
  });
});
