import { describe, expect, it } from "vitest";
import { filterRuns, nextSort, sortRuns } from "./table";
import { runView } from "./fixtures";

const runs = [
  runView("run-2", { method: "qlora", best_eval_loss: 1.3, created_at: "2025-03-02 10:00:00", tags: ["baseline"] }),
  runView("run-10", { method: "lora", best_eval_loss: null, status: "failed", created_at: "2025-03-03 10:00:00" }),
  runView("run-1", { method: "dora", model: "qwen2.5-0.5b", best_eval_loss: 1.1, created_at: "2025-03-01 10:00:00" }),
];

describe("runs table", () => {
  it("sorts ids naturally and keeps missing values last in both directions", () => {
    expect(sortRuns(runs, { key: "id", dir: "asc" }).map((r) => r.id)).toEqual(["run-1", "run-2", "run-10"]);
    expect(sortRuns(runs, { key: "best", dir: "asc" }).map((r) => r.id)).toEqual(["run-1", "run-2", "run-10"]);
    expect(sortRuns(runs, { key: "best", dir: "desc" }).map((r) => r.id)).toEqual(["run-2", "run-1", "run-10"]);
    expect(sortRuns(runs, { key: "created", dir: "desc" }).map((r) => r.id)).toEqual(["run-10", "run-2", "run-1"]);
  });

  it("filters by id, method, model, dataset and tag, and by status", () => {
    expect(filterRuns(runs, "QWEN", "").map((r) => r.id)).toEqual(["run-1"]);
    expect(filterRuns(runs, "baseline", "").map((r) => r.id)).toEqual(["run-2"]);
    expect(filterRuns(runs, "lora", "").map((r) => r.id)).toEqual(["run-2", "run-10"]);
    expect(filterRuns(runs, "lora", "failed").map((r) => r.id)).toEqual(["run-10"]);
    expect(filterRuns(runs, "", "").length).toBe(3);
  });

  it("toggles the direction on the same column", () => {
    expect(nextSort({ key: "id", dir: "asc" }, "id")).toEqual({ key: "id", dir: "desc" });
    expect(nextSort({ key: "id", dir: "asc" }, "tps")).toEqual({ key: "tps", dir: "desc" });
    expect(nextSort({ key: "id", dir: "asc" }, "best")).toEqual({ key: "best", dir: "asc" });
  });
});
