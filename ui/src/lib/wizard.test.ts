import { describe, expect, it } from "vitest";
import {
  activePreset,
  applyPreset,
  assumedTokensPerS,
  computeRank,
  estimateSeconds,
  fitLevel,
  formatDuration,
  formatPercent,
  getPair,
  previewSegments,
  repoId,
  sameValue,
  setPair,
  sortRows,
  splitCounts,
  totalSteps,
} from "./wizard";
import { methodRows, trainConfig } from "../components/wizard/fixtures";

describe("setting pairs", () => {
  it("sets, replaces and removes one key", () => {
    expect(setPair(["a=1", "b=2"], "a", "3")).toEqual(["a=3", "b=2"]);
    expect(setPair(["a=1", "b=2", "a=5"], "a", "3")).toEqual(["a=3", "b=2"]);
    expect(setPair(["a=1"], "c", "x")).toEqual(["a=1", "c=x"]);
    expect(setPair(["a=1", "b=2"], "a", null)).toEqual(["b=2"]);
    expect(getPair(["lora.r=8", "lora.r=16"], "lora.r")).toBe("16");
    expect(getPair(["lora.targets=q_proj,v_proj"], "lora.targets")).toBe("q_proj,v_proj");
    expect(getPair([], "x")).toBeUndefined();
  });

  it("a preset replaces every preset key and is recognised again", () => {
    const quick = applyPreset(["lora.r=16", "epochs=2"], "quick");
    expect(quick).toEqual(["lora.r=16", "max_steps=60", "eval_every=20", "save_every=20", "seq_len=256"]);
    expect(activePreset(quick)).toBe("quick");
    const balanced = applyPreset(quick, "balanced");
    expect(balanced).not.toContain("max_steps=60");
    expect(activePreset(balanced)).toBe("balanced");
    expect(activePreset(applyPreset(balanced, "thorough"))).toBe("thorough");
    expect(activePreset(setPair(balanced, "seq_len", "384"))).toBeNull();
    expect(activePreset([])).toBeNull();
  });

  it("compares values as the backend reads them", () => {
    expect(sameValue("1", "1.0")).toBe(true);
    expect(sameValue("0.0002", "2e-4")).toBe(true);
    expect(sameValue("True", "true")).toBe(true);
    expect(sameValue("", "0")).toBe(false);
    expect(sameValue("cosine", "linear")).toBe(false);
  });
});

describe("method table helpers", () => {
  it("ranks compute from cheapest to dearest and sorts stably", () => {
    expect(computeRank("veryLow")).toBeLessThan(computeRank("low"));
    expect(computeRank("qloraCompute")).toBeGreaterThan(computeRank("low"));
    expect(computeRank("veryHigh")).toBeGreaterThan(computeRank("high"));
    const rows = methodRows();
    const byCompute = sortRows(rows, "compute", "ascending").map((r) => r.id);
    expect(byCompute.slice(0, 3)).toEqual(["ia3", "bitfit", "prompt_tuning"]);
    expect(sortRows(rows, null, "ascending").map((r) => r.id)).toEqual(rows.map((r) => r.id));
  });

  it("formats shares and memory levels", () => {
    expect(formatPercent((100 * 921_600) / 134_515_008)).toBe("0.69 %");
    expect(formatPercent(100)).toBe("100 %");
    expect(formatPercent(5.264)).toBe("5.3 %");
    expect(formatPercent((100 * 11_520) / 134_515_008)).toBe("0.0086 %");
    expect(fitLevel(5, 10)).toBe("ok");
    expect(fitLevel(9, 10)).toBe("tight");
    expect(fitLevel(11, 10)).toBe("over");
    expect(fitLevel(11, null)).toBe("unknown");
  });
});

describe("dataset helpers", () => {
  it("splits trained spans and special tokens", () => {
    const segs = previewSegments("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n⟦hello<|im_end|>⟧\n");
    expect(segs.filter((s) => s.trained).map((s) => s.text)).toEqual(["hello", "<|im_end|>"]);
    expect(segs.filter((s) => s.special).map((s) => s.text)).toEqual(["<|im_start|>", "<|im_end|>", "<|im_start|>", "<|im_end|>"]);
    expect(segs.map((s) => s.text).join("")).toBe("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n");
    expect(previewSegments("plain text")).toEqual([{ text: "plain text", trained: false, special: false }]);
  });

  it("splits records as the backend does", () => {
    expect(splitCounts(300, 0.1)).toEqual({ train: 270, eval: 30 });
    expect(splitCounts(5, 0.01)).toEqual({ train: 4, eval: 1 });
    expect(splitCounts(1, 0.5)).toEqual({ train: 0, eval: 1 });
    expect(splitCounts(300, 0)).toEqual({ train: 300, eval: 0 });
  });
});

describe("time estimate", () => {
  it("counts steps as the trainer does and turns them into a rough time", () => {
    const cfg = trainConfig("lora");
    expect(totalSteps(cfg, 300)).toBe(68); // ceil(270 / 4)
    expect(totalSteps({ ...cfg, max_steps: 60 }, 300)).toBe(60);
    expect(totalSteps({ ...cfg, epochs: 3, grad_accum: 2 }, 300)).toBe(102);
    const rate = assumedTokensPerS("cpu:0", 134_515_008, "lora");
    expect(rate).toBe(400);
    expect(assumedTokensPerS("cpu:0", 1.35e9, "lora")).toBeCloseTo(40);
    expect(assumedTokensPerS("cuda:0", 134_515_008, "lora")).toBe(4000);
    expect(estimateSeconds(cfg, 68, rate)).toBeCloseTo((68 * 4 * 512) / 400);
    expect(formatDuration(45)).toBe("45 s");
    expect(formatDuration(348)).toBe("6 min");
    expect(formatDuration(7500)).toBe("2 h 05 min");
  });

  it("reads hub ids in the forms people paste", () => {
    expect(repoId("hf:Qwen/Qwen2.5-0.5B-Instruct")).toBe("Qwen/Qwen2.5-0.5B-Instruct");
    expect(repoId(" https://huggingface.co/HuggingFaceTB/SmolLM2-135M/ ")).toBe("HuggingFaceTB/SmolLM2-135M");
  });
});
