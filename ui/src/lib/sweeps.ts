// Sweeps in the window: the spec the wizard sends, the ranking the Sweep screen shows and the
// points of its setting-vs-loss chart. Pure functions, tested in sweeps.test.ts.
import type { GridAxis, MethodKind, RunView, SweepSpec } from "./ipc";

/** The spec of a grid sweep over the wizard's choices. */
export function sweepSpec(model: string, data: string, method: MethodKind, sets: string[], grid: GridAxis[]): SweepSpec {
  return {
    name: null,
    model,
    data,
    method,
    sets: [...sets],
    grid: grid.map((g) => ({ key: g.key, values: [...g.values] })),
    random: 0,
    ranges: [],
  };
}

export type SweepMetric = "best" | "tps" | "train";

/** The value a run is ranked by, or null when it has none yet. */
export function metricOf(r: RunView, m: SweepMetric): number | null {
  const v = m === "best" ? r.best_eval_loss : m === "tps" ? r.tokens_per_s : r.final_train_loss;
  return v != null && Number.isFinite(v) ? v : null;
}

/** Runs best first: lowest loss, or highest tokens/s; runs without a value last, by id. */
export function rankRuns(runs: RunView[], m: SweepMetric): RunView[] {
  const sign = m === "tps" ? -1 : 1;
  const num = (id: string) => Number(id.replace(/\D/g, "")) || 0;
  return [...runs].sort((a, b) => {
    const x = metricOf(a, m);
    const y = metricOf(b, m);
    if (x == null || y == null) return (x == null ? 1 : 0) - (y == null ? 1 : 0) || num(a.id) - num(b.id);
    return sign * (x - y) || num(a.id) - num(b.id);
  });
}

/** `lr=1e-4 lora.r=8`. */
export function settingsText(s: Record<string, string> | null | undefined): string {
  return Object.entries(s ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}

export type Point = { id: string; x: number; y: number; label: string; value: string };
export type Axis = { kind: "linear" | "log" | "category"; ticks: { at: number; label: string }[] };

/** Chart points of `key` against best eval loss, in [0, 1] × [0, 1] (y up), and the x axis:
 *  numbers on a linear or (over a decade or more of positive values) log scale, anything else
 *  as evenly spaced categories in first-seen order. */
export function scatter(runs: RunView[], key: string): { points: Point[]; axis: Axis; yMin: number; yMax: number } {
  const rows = runs
    .map((r) => ({ r, value: r.settings?.[key], loss: metricOf(r, "best") }))
    .filter((p): p is { r: RunView; value: string; loss: number } => p.value !== undefined && p.loss != null);
  const values = [...new Set(runs.map((r) => r.settings?.[key]).filter((v): v is string => v !== undefined))];
  const numeric = values.length > 0 && values.every((v) => v.trim() !== "" && Number.isFinite(Number(v)));
  let axis: Axis;
  let place: (v: string) => number;
  if (numeric) {
    const nums = values.map(Number);
    const lo = Math.min(...nums);
    const hi = Math.max(...nums);
    const log = lo > 0 && hi / lo >= 10;
    const f = (x: number) => (log ? Math.log10(x) : x);
    const span = f(hi) - f(lo) || 1;
    place = (v) => (hi === lo ? 0.5 : (f(Number(v)) - f(lo)) / span);
    axis = {
      kind: log ? "log" : "linear",
      ticks: [...nums].sort((a, b) => a - b).map((x) => ({ at: place(String(x)), label: String(x) })),
    };
  } else {
    place = (v) => (values.length === 1 ? 0.5 : values.indexOf(v) / (values.length - 1));
    axis = { kind: "category", ticks: values.map((v) => ({ at: place(v), label: v })) };
  }
  const losses = rows.map((p) => p.loss);
  const yMin = losses.length ? Math.min(...losses) : 0;
  const yMax = losses.length ? Math.max(...losses) : 1;
  const ySpan = yMax - yMin || 1;
  const points = rows.map((p) => ({
    id: p.r.id,
    x: place(p.value),
    y: yMax === yMin ? 0.5 : (p.loss - yMin) / ySpan,
    label: `${p.r.id} · ${settingsText(p.r.settings)} · ${p.loss.toFixed(4)}`,
    value: p.value,
  }));
  return { points, axis, yMin, yMax };
}
