// The comparison's metric rows, which value wins each, and how a run is named in a legend.
import type { RunView } from "../../lib/ipc";
import type { MessageKey } from "../../lib/i18n";
import { formatCount, formatDuration, formatLoss, formatMemory, formatRate } from "./format";

export interface MetricRow {
  id: string;
  label: MessageKey;
  /** Higher wins (tokens/s); otherwise lower wins. */
  higherBetter: boolean;
  value: (r: RunView) => number | null;
  format: (v: number | null) => string;
}

export const METRIC_ROWS: MetricRow[] = [
  { id: "best_eval", label: "runs.metric.bestEval", higherBetter: false, value: (r) => r.best_eval_loss ?? null, format: formatLoss },
  { id: "last_eval", label: "runs.metric.lastEval", higherBetter: false, value: (r) => r.last_eval_loss ?? null, format: formatLoss },
  { id: "final_train", label: "runs.metric.finalTrain", higherBetter: false, value: (r) => r.final_train_loss ?? null, format: formatLoss },
  { id: "tps", label: "runs.metric.tokensPerS", higherBetter: true, value: (r) => r.tokens_per_s ?? null, format: formatRate },
  { id: "peak_mem", label: "runs.metric.peakMem", higherBetter: false, value: (r) => r.peak_mem_bytes ?? null, format: formatMemory },
  { id: "trainable", label: "runs.metric.trainable", higherBetter: false, value: (r) => r.trainable_params ?? null, format: formatCount },
  { id: "elapsed", label: "runs.metric.elapsed", higherBetter: false, value: (r) => r.elapsed_s ?? null, format: formatDuration },
  { id: "adapter", label: "runs.metric.adapter", higherBetter: false, value: (r) => r.adapter_bytes ?? null, format: formatMemory },
];

/**
 * Indices of the winning values (every one of a tie). Nothing wins unless at least two runs
 * have a value and they differ: a lone number, or a row where all agree, has no winner.
 */
export function bestIndices(values: readonly (number | null | undefined)[], higherBetter: boolean): Set<number> {
  const present = values.filter((v): v is number => v != null && Number.isFinite(v));
  if (present.length < 2) return new Set();
  const best = higherBetter ? Math.max(...present) : Math.min(...present);
  if (present.every((v) => v === best)) return new Set();
  const out = new Set<number>();
  values.forEach((v, i) => {
    if (v === best) out.add(i);
  });
  return out;
}

export interface KeySettings {
  lr: number | null;
  r: number | null;
  seqLen: number | null;
}

const LORA_FAMILY = new Set(["lora", "qlora", "dora", "lora_plus"]);

function num(v: unknown): number | null {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

/** Learning rate, LoRA rank (LoRA family only) and sequence length from a run's config. */
export function keySettings(run: RunView): KeySettings {
  const cfg = (run.config ?? {}) as unknown as Record<string, unknown>;
  const lora = (cfg.lora ?? {}) as Record<string, unknown>;
  return {
    lr: num(cfg.lr),
    r: LORA_FAMILY.has(run.method) ? num(lora.r) : null,
    seqLen: num(cfg.seq_len),
  };
}

/** `run-3 · LoRA-ish method · lr=2e-4 r=16 seq_len=512` for a legend. */
export function runLabel(run: RunView): string {
  const s = keySettings(run);
  const parts = [s.lr != null ? `lr=${+s.lr.toPrecision(2)}` : null, s.r != null ? `r=${s.r}` : null, s.seqLen != null ? `seq_len=${s.seqLen}` : null]
    .filter(Boolean)
    .join(" ");
  return [run.id, run.method, parts].filter(Boolean).join(" · ");
}

/** The one base model every run shares, or null when they differ. */
export function sharedModel(runs: readonly RunView[]): string | null {
  if (!runs.length) return null;
  const m = runs[0].model;
  return runs.every((r) => r.model === m) ? m : null;
}

/** Colours and dashes for the n-th run: colour is never the only difference. */
export const RUN_COLORS = ["--accent", "--warn", "--bad", "--ok", "--text", "--muted"];
export const RUN_DASHES: (number[] | undefined)[] = [undefined, [8, 4], [2, 3], [12, 3, 2, 3], [4, 4], [1, 2]];
