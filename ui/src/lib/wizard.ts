// Pure helpers of the new-run wizard: settings as `key=value` pairs, presets, the method
// table's ordering, the dataset preview's trained spans, the split, and the time estimate.
import type { MethodKind, MethodRow } from "./ipc";

// --- settings pairs -----------------------------------------------------------------------

export type Preset = "quick" | "balanced" | "thorough";
export const PRESET_IDS: Preset[] = ["quick", "balanced", "thorough"];

/** What each preset sets; applying one first removes every key any preset manages. */
export const PRESETS: Record<Preset, string[]> = {
  quick: ["max_steps=60", "eval_every=20", "save_every=20", "seq_len=256"],
  balanced: ["epochs=1", "eval_every=50", "save_every=50", "seq_len=512"],
  thorough: ["epochs=3", "eval_every=100", "save_every=100", "seq_len=1024", "gradient_checkpointing=true"],
};

/** Keys the presets manage (a preset replaces all of them, so Quick's max_steps goes away
 *  when Balanced is chosen). */
export const PRESET_KEYS = ["max_steps", "epochs", "eval_every", "save_every", "seq_len", "gradient_checkpointing"];

/** The defaults every method shares for the keys the wizard needs before the schema is in. */
export const DEFAULT_SEQ_LEN = 512;
export const DEFAULT_EVAL_FRACTION = 0.1;

export function pairKey(pair: string): string {
  const i = pair.indexOf("=");
  return (i < 0 ? pair : pair.slice(0, i)).trim();
}

export function pairValue(pair: string): string {
  const i = pair.indexOf("=");
  return i < 0 ? "" : pair.slice(i + 1);
}

/** The value `sets` gives `key` (the last pair wins, as on the command line). */
export function getPair(sets: readonly string[], key: string): string | undefined {
  let found: string | undefined;
  for (const p of sets) if (pairKey(p) === key) found = pairValue(p);
  return found;
}

/** `sets` with `key` set to `value` (in place of any earlier pair), or removed for `null`. */
export function setPair(sets: readonly string[], key: string, value: string | null): string[] {
  const out: string[] = [];
  let placed = false;
  for (const p of sets) {
    if (pairKey(p) !== key) out.push(p);
    else if (value !== null && !placed) {
      out.push(`${key}=${value}`);
      placed = true;
    }
  }
  if (value !== null && !placed) out.push(`${key}=${value}`);
  return out;
}

/** `sets` with `device=<device>` added when no pair names a device and one is preferred (the
 *  backend would otherwise pick the best device, GPU first). */
export function withDevice(sets: readonly string[], device: string | undefined): string[] {
  return device && getPair(sets, "device") === undefined ? [...sets, `device=${device}`] : [...sets];
}

export function applyPreset(sets: readonly string[], preset: Preset): string[] {
  return [...sets.filter((p) => !PRESET_KEYS.includes(pairKey(p))), ...PRESETS[preset]];
}

/** The preset whose pairs are exactly the preset-managed pairs in `sets`, if any. */
export function activePreset(sets: readonly string[]): Preset | null {
  const managed = sets.filter((p) => PRESET_KEYS.includes(pairKey(p))).map(normalisePair).sort();
  for (const id of PRESET_IDS) {
    const want = PRESETS[id].map(normalisePair).sort();
    if (want.length === managed.length && want.every((p, i) => p === managed[i])) return id;
  }
  return null;
}

function normalisePair(p: string): string {
  return `${pairKey(p)}=${pairValue(p).trim()}`;
}

/** Whether two setting values mean the same (`1` and `1.0`, `true` and `True`). */
export function sameValue(a: string, b: string): boolean {
  const x = a.trim();
  const y = b.trim();
  if (x === y) return true;
  if (x !== "" && y !== "" && Number.isFinite(Number(x)) && Number.isFinite(Number(y))) return Number(x) === Number(y);
  return x.toLowerCase() === y.toLowerCase();
}

/** A number from `sets` (or `fallback` when unset or not a number). */
export function numberSetting(sets: readonly string[], key: string, fallback: number): number {
  const v = getPair(sets, key);
  const n = v == null ? NaN : Number(v);
  return Number.isFinite(n) ? n : fallback;
}

// --- method table -------------------------------------------------------------------------

/** Compute cost, cheapest first, by the column's phrase key (`MethodRow.phrases.compute`). */
const COMPUTE_RANK: Record<string, number> = {
  veryLow: 0,
  low: 1,
  lowMedium: 2,
  qloraCompute: 2,
  medium: 3,
  high: 4,
  veryHigh: 5,
};

export function computeRank(computeKey: string): number {
  return COMPUTE_RANK[computeKey] ?? 3;
}

export type SortKey = "trainable" | "memory" | "compute";
export type SortDir = "ascending" | "descending";

export function sortRows(rows: readonly MethodRow[], key: SortKey | null, dir: SortDir): MethodRow[] {
  const out = [...rows];
  if (!key) return out;
  const value = (r: MethodRow) =>
    key === "trainable" ? r.trainable_percent : key === "memory" ? r.est_memory_bytes : computeRank(r.phrases.compute);
  const sign = dir === "ascending" ? 1 : -1;
  // stable: equal values keep the backend's order
  return out
    .map((r, i) => [r, i] as const)
    .sort((a, b) => sign * (value(a[0]) - value(b[0])) || a[1] - b[1])
    .map(([r]) => r);
}

/** The device a table or estimate is for: its kind (`cpu`, `cuda`, `metal`), name and the
 *  memory a run may use (90 % of the device's). */
export type DeviceContext = { kind: string; name: string; usable: number | null };

/** A change that makes a run fit: another method and/or other pairs, with its estimate. */
export type Fix = { method?: MethodKind; sets: string[]; label: string; bytes: number };

/** Memory state against what the device can give: ok, tight (above 85 %), over. */
export type FitLevel = "ok" | "tight" | "over" | "unknown";

export function fitLevel(bytes: number, usable: number | null | undefined): FitLevel {
  if (usable == null || usable <= 0) return "unknown";
  const f = bytes / usable;
  return f > 1 ? "over" : f > 0.85 ? "tight" : "ok";
}

/** Trainable share as a percentage with sensible precision: 100 %, 12.5 %, 0.69 %, 0.0086 %. */
export function formatPercent(p: number): string {
  if (!Number.isFinite(p)) return "—";
  if (p >= 10) return `${p.toFixed(0)} %`;
  if (p >= 1) return `${p.toFixed(1)} %`;
  if (p >= 0.01) return `${p.toFixed(2)} %`;
  if (p === 0) return "0 %";
  return `${p.toPrecision(2)} %`;
}

/** A byte count as GiB with one decimal below 100 GiB (memory figures compare in GiB). */
export function formatGiB(bytes: number): string {
  const g = bytes / 2 ** 30;
  return `${g >= 100 ? g.toFixed(0) : g >= 0.1 ? g.toFixed(1) : g.toFixed(2)} GiB`;
}

// --- dataset preview ----------------------------------------------------------------------

export type Segment = { text: string; trained: boolean; special: boolean };

const SPECIAL = /(<\|[^|<>\s]{1,40}\|>|<\/?s>|\[INST\]|\[\/INST\])/;

/** A rendered record split into runs: trained (inside ⟦ ⟧) or not, and the template's
 *  special tokens (`<|im_start|>`, `</s>`) apart so they can be shown quieter. */
export function previewSegments(rendered: string): Segment[] {
  const out: Segment[] = [];
  let trained = false;
  let buf = "";
  const flush = () => {
    if (!buf) return;
    // split with a capturing group: the special tokens land at the odd indices
    buf.split(SPECIAL).forEach((piece, i) => {
      if (piece) out.push({ text: piece, trained, special: i % 2 === 1 });
    });
    buf = "";
  };
  for (const ch of rendered) {
    if (ch === "⟦" || ch === "⟧") {
      flush();
      trained = ch === "⟦";
    } else buf += ch;
  }
  flush();
  return out;
}

/** The backend's train/eval split sizes (`whetstone_data::dataset::split`). */
export function splitCounts(records: number, evalFraction: number): { train: number; eval: number } {
  const n = Math.max(0, Math.floor(records));
  let nEval = Math.round(n * evalFraction);
  if (evalFraction > 0 && n > 1) nEval = Math.min(Math.max(nEval, 1), n - 1);
  nEval = Math.min(Math.max(nEval, 0), n);
  return { train: n - nEval, eval: nEval };
}

// --- time estimate ------------------------------------------------------------------------

/** Tokens per second assumed when no earlier run of this model and method measured it:
 *  a conservative CPU figure for a ~135M model with LoRA, scaled by model size. */
export const CPU_TOKENS_PER_S = 400;
export const GPU_TOKENS_PER_S = 4000;
const REFERENCE_PARAMS = 135e6;

export function assumedTokensPerS(deviceKind: string, baseParams: number, method: string): number {
  const base = deviceKind.startsWith("cpu") ? CPU_TOKENS_PER_S : GPU_TOKENS_PER_S;
  const scale = baseParams > REFERENCE_PARAMS ? REFERENCE_PARAMS / baseParams : 1;
  const methodFactor = method === "full" || method === "freeze" ? 0.5 : method === "qlora" ? 0.6 : 1;
  return Math.max(1, base * scale * methodFactor);
}

export type StepConfig = {
  max_steps: number | null;
  epochs: number;
  batch_size: number;
  grad_accum: number;
  seq_len: number;
  eval_fraction: number;
};

/** Optimizer steps the trainer will run (as `engine/src/train/run.rs`: max_steps, else epochs over the
 *  training split in effective batches). */
export function totalSteps(cfg: StepConfig, records: number): number {
  if (cfg.max_steps != null && cfg.max_steps > 0) return cfg.max_steps;
  const { train } = splitCounts(records, cfg.eval_fraction);
  const perStep = Math.max(1, cfg.batch_size * cfg.grad_accum);
  return Math.max(1, Math.ceil((cfg.epochs * train) / perStep));
}

/** Seconds for `steps` at `tokensPerS`, counting every row as a full `seq_len` (an upper bound). */
export function estimateSeconds(cfg: StepConfig, steps: number, tokensPerS: number): number {
  return (steps * cfg.seq_len * cfg.batch_size * cfg.grad_accum) / Math.max(1e-9, tokensPerS);
}

/** Median of the measured throughputs, or null. */
export function median(values: number[]): number | null {
  const v = values.filter((x) => Number.isFinite(x) && x > 0).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/** "45 s", "12 min", "2 h 05 min". */
export function formatDuration(s: number): string {
  if (!Number.isFinite(s)) return "—";
  if (s < 60) return `${Math.max(1, Math.round(s))} s`;
  const min = Math.round(s / 60);
  if (min < 60) return `${min} min`;
  const h = Math.floor(min / 60);
  return `${h} h ${String(min - h * 60).padStart(2, "0")} min`;
}

/** `owner/name` from `hf:owner/name` or a hub URL-ish input. */
export function repoId(input: string): string {
  return input
    .trim()
    .replace(/^hf:/, "")
    .replace(/^https?:\/\/huggingface\.co\//, "")
    .replace(/\/+$/, "");
}
