// Columnar metric series (uPlot's layout: one array per column, row i across all of them).
// Rows arrive from history (`api.runMetrics`) and then live (`TrainEvent`s); every row is keyed
// by its optimizer step, so a step seen twice replaces the first (history overlapping live
// events, or a run resumed from an earlier checkpoint re-training the same steps). Appending a
// newer step is a push: O(1) amortised, no array is copied.
import type { NamedSeries } from "./bindings/NamedSeries";
import type { RunMetrics, TrainEvent } from "./ipc";

export type Num = number | null;
export type TrainColumns = RunMetrics["train"];
export type EvalColumns = RunMetrics["eval"];
export type SampleRow = RunMetrics["samples"][number];
export type LogRow = RunMetrics["logs"][number];
export type CheckpointRow = RunMetrics["checkpoints"][number];
export type StepEvent = Extract<TrainEvent, { event: "step" }>;
export type EvalEvent = Extract<TrainEvent, { event: "eval" }>;

/** Columns of a train row other than `step`, in RunMetrics order. */
export const TRAIN_KEYS = ["loss", "lr", "grad_norm", "tokens_per_s", "mem_bytes", "tokens", "time_s"] as const;
/** Columns of an eval row other than `step`. */
export const EVAL_KEYS = ["loss", "perplexity", "tokens", "time_s"] as const;
export type TrainKey = (typeof TRAIN_KEYS)[number];
export type EvalKey = (typeof EVAL_KEYS)[number];

const GIB = 2 ** 30;

/** Index of the first element of the ascending `xs` that is ≥ `x` (xs.length when none). */
export function lowerBound(xs: ArrayLike<number>, x: number): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (xs[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Index of the first element of the ascending `xs` that is > `x` (xs.length when none). */
export function upperBound(xs: ArrayLike<number>, x: number): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (xs[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Keep only the rows at or before `step`, in place; says whether any went. */
export function dropRowsAfter<T extends { step: number }>(rows: T[], step: number): boolean {
  let n = 0;
  for (const row of rows) if (row.step <= step) rows[n++] = row;
  const dropped = n !== rows.length;
  rows.length = n;
  return dropped;
}

export type Upsert = "append" | "replace" | "insert";

/** Put `row` at `step` in step-sorted columns: push when newer than the last row (the common
 *  case), overwrite when the step is already there, insert in order otherwise. */
export function upsertRow<K extends string>(
  cols: { step: number[] } & { [k in K]: Num[] },
  keys: readonly K[],
  step: number,
  row: { [k in K]: Num },
): Upsert {
  const steps = cols.step;
  const n = steps.length;
  if (n === 0 || step > steps[n - 1]) {
    steps.push(step);
    for (const k of keys) cols[k].push(row[k]);
    return "append";
  }
  const i = lowerBound(steps, step);
  if (steps[i] === step) {
    for (const k of keys) cols[k][i] = row[k];
    return "replace";
  }
  steps.splice(i, 0, step);
  for (const k of keys) cols[k].splice(i, 0, row[k]);
  return "insert";
}

export function emptyTrain(): TrainColumns {
  return { step: [], loss: [], lr: [], grad_norm: [], tokens_per_s: [], mem_bytes: [], tokens: [], time_s: [] };
}

export function emptyEval(): EvalColumns {
  return { step: [], loss: [], perplexity: [], tokens: [], time_s: [] };
}

/**
 * Several y series over one x column, as uPlot wants it (`data` is `[x, ...ys]`, a stable
 * reference: hand it to `setData` again after changes). Setting a value at an x that is not
 * there yet adds a row with nulls in the other series.
 */
export class AlignedTable {
  readonly x: number[];
  readonly ys: Num[][];
  readonly data: [number[], ...Num[][]];

  constructor(series: number, x: number[] = [], ys?: Num[][]) {
    this.x = x;
    this.ys = ys ?? Array.from({ length: series }, () => new Array<Num>(x.length).fill(null));
    this.data = [this.x, ...this.ys];
  }

  get length(): number {
    return this.x.length;
  }

  /** Drop every row with an x above `x`, in place (the arrays stay the same objects). */
  truncateAfter(x: number): boolean {
    const n = upperBound(this.x, x);
    if (n === this.x.length) return false;
    this.x.length = n;
    for (const y of this.ys) y.length = n;
    return true;
  }

  set(x: number, series: number, v: Num): void {
    const n = this.x.length;
    if (n === 0 || x > this.x[n - 1]) {
      this.x.push(x);
      for (let s = 0; s < this.ys.length; s++) this.ys[s].push(s === series ? v : null);
      return;
    }
    const i = lowerBound(this.x, x);
    if (this.x[i] === x) {
      this.ys[series][i] = v;
      return;
    }
    this.x.splice(i, 0, x);
    for (let s = 0; s < this.ys.length; s++) this.ys[s].splice(i, 0, s === series ? v : null);
  }
}

/** One curve for `alignSeries`: x and y of the same length (rows with a null x are skipped). */
export interface Curve {
  x: ArrayLike<Num>;
  y: ArrayLike<Num>;
}

/**
 * Curves with different x values on one shared, sorted, de-duplicated x column; a curve is null
 * where it has no point (draw with `spanGaps`). Within one curve a repeated x keeps its last y.
 */
export function alignSeries(curves: Curve[]): [number[], ...Num[][]] {
  let total = 0;
  for (const c of curves) total += Math.min(c.x.length, c.y.length);
  const all = new Float64Array(total);
  let n = 0;
  for (const c of curves) {
    const len = Math.min(c.x.length, c.y.length);
    for (let i = 0; i < len; i++) {
      const x = c.x[i];
      if (x != null && Number.isFinite(x)) all[n++] = x;
    }
  }
  const sorted = all.subarray(0, n).sort();
  const xs: number[] = [];
  for (let i = 0; i < sorted.length; i++) {
    if (i === 0 || sorted[i] !== sorted[i - 1]) xs.push(sorted[i]);
  }
  const ys = curves.map((c) => {
    const out = new Array<Num>(xs.length).fill(null);
    const len = Math.min(c.x.length, c.y.length);
    let j = 0;
    let prev = -Infinity;
    for (let i = 0; i < len; i++) {
      const x = c.x[i];
      if (x == null || !Number.isFinite(x)) continue;
      // Sorted input walks forward; anything out of order falls back to a binary search.
      if (x >= prev) {
        while (xs[j] < x) j++;
      } else {
        j = lowerBound(xs, x);
      }
      prev = x;
      out[j] = c.y[i] ?? null;
    }
    return out;
  });
  return [xs, ...ys];
}

/** Steps per second over the last `windowMs` of (time, step) observations. */
export class StepRate {
  private t: number[] = [];
  private s: number[] = [];
  constructor(private windowMs = 60_000, private maxPoints = 64) {}

  push(timeMs: number, step: number): void {
    const n = this.s.length;
    // A step lower than the last one means a resume from an earlier checkpoint: start over.
    if (n > 0 && step < this.s[n - 1]) this.clear();
    this.t.push(timeMs);
    this.s.push(step);
    let drop = 0;
    while (this.t.length - drop > 2 && (timeMs - this.t[drop] > this.windowMs || this.t.length - drop > this.maxPoints)) drop++;
    if (drop > 0) {
      this.t.splice(0, drop);
      this.s.splice(0, drop);
    }
  }

  clear(): void {
    this.t = [];
    this.s = [];
  }

  /** Steps per second, or null with fewer than two observations apart in time. */
  rate(): number | null {
    const n = this.t.length;
    if (n < 2) return null;
    const dt = (this.t[n - 1] - this.t[0]) / 1000;
    const ds = this.s[n - 1] - this.s[0];
    if (dt <= 0 || ds <= 0) return null;
    return ds / dt;
  }

  /** Seconds left to reach `total`, or null when the rate is unknown. */
  eta(step: number, total: number | null): number | null {
    if (total == null) return null;
    if (step >= total) return 0;
    const r = this.rate();
    return r ? (total - step) / r : null;
  }
}

/**
 * Everything plotted for one run: the RunMetrics columns, the loss chart's table (train and eval
 * loss on one step axis) and memory in GiB for its chart, each kept in step with the others.
 */
export class RunSeries {
  readonly train: TrainColumns;
  readonly eval: EvalColumns;
  /** `[step, train loss, eval loss]`. */
  readonly loss: AlignedTable;
  /** Memory of each train row in GiB (parallel to `train.step`). */
  readonly memGiB: Num[];
  /** The objective's metrics beyond the loss, by name: `[step, train value, eval value]`. */
  readonly named: Map<string, AlignedTable> = new Map();

  constructor(train: TrainColumns = emptyTrain(), evalCols: EvalColumns = emptyEval(), named: NamedSeries[] = []) {
    this.train = train;
    this.eval = evalCols;
    for (const n of named) {
      n.train_step.forEach((step, i) => this.setNamed(n.name, step, 0, n.train[i]));
      n.eval_step.forEach((step, i) => this.setNamed(n.name, step, 1, n.eval[i]));
    }
    const [x, trainLoss, evalLoss] = alignSeries([
      { x: train.step, y: train.loss },
      { x: evalCols.step, y: evalCols.loss },
    ]);
    this.loss = new AlignedTable(2, x, [trainLoss, evalLoss]);
    this.memGiB = train.mem_bytes.map((b: number | null) => (b == null ? null : b / GIB));
  }

  static fromMetrics(m: Pick<RunMetrics, "train" | "eval"> & Partial<Pick<RunMetrics, "named">>): RunSeries {
    return new RunSeries(m.train, m.eval, m.named ?? []);
  }

  /** Set metric `name`'s train (`col` 0) or eval (1) value at `step`. */
  private setNamed(name: string, step: number, col: number, v: Num): void {
    let table = this.named.get(name);
    if (!table) {
      table = new AlignedTable(2);
      this.named.set(name, table);
    }
    table.set(step, col, v);
  }

  get lastTrainStep(): number | null {
    const s = this.train.step;
    return s.length ? s[s.length - 1] : null;
  }

  get lastEvalStep(): number | null {
    const s = this.eval.step;
    return s.length ? s[s.length - 1] : null;
  }

  /** Seconds of training at the newest row, train or eval. */
  get lastTime(): number | null {
    const a = this.train.time_s;
    const b = this.eval.time_s;
    const ta = a.length ? a[a.length - 1] : null;
    const tb = b.length ? b[b.length - 1] : null;
    if (ta == null) return tb;
    if (tb == null) return ta;
    return Math.max(ta, tb);
  }

  /** Tokens trained on at `step` (the train row of that step, else the newest one before). */
  tokensAt(step: number): Num {
    const s = this.train.step;
    if (!s.length) return step === 0 ? 0 : null;
    let i = lowerBound(s, step);
    if (i === s.length || s[i] !== step) i--;
    return i >= 0 ? this.train.tokens[i] : 0;
  }

  addTrain(step: number, row: { [k in TrainKey]: Num }): Upsert {
    const how = upsertRow(this.train, TRAIN_KEYS, step, row);
    const gib = row.mem_bytes == null ? null : row.mem_bytes / GIB;
    if (how === "append") this.memGiB.push(gib);
    else this.memGiB.splice(lowerBound(this.train.step, step), how === "replace" ? 1 : 0, gib);
    this.loss.set(step, 0, row.loss);
    return how;
  }

  addEval(step: number, row: { [k in EvalKey]: Num }): Upsert {
    const how = upsertRow(this.eval, EVAL_KEYS, step, row);
    this.loss.set(step, 1, row.loss);
    return how;
  }

  addStepEvent(e: StepEvent, timeS: Num): Upsert {
    for (const [name, v] of Object.entries(e.metrics ?? {})) this.setNamed(name, e.step, 0, v ?? null);
    return this.addTrain(e.step, {
      loss: e.loss,
      lr: e.lr,
      grad_norm: e.grad_norm,
      tokens_per_s: e.tokens_per_s,
      mem_bytes: e.mem_bytes,
      tokens: e.tokens,
      time_s: timeS,
    });
  }

  addEvalEvent(e: EvalEvent, timeS: Num): Upsert {
    for (const [name, v] of Object.entries(e.metrics ?? {})) this.setNamed(name, e.step, 1, v ?? null);
    return this.addEval(e.step, { loss: e.eval_loss, perplexity: e.perplexity, tokens: this.tokensAt(e.step), time_s: timeS });
  }

  /**
   * Drop every train and eval row after `step`, in place: the column arrays (and the loss
   * table's `data`) stay the same objects, so a chart holding them only needs a redraw. A run
   * resumed from the checkpoint at `step` re-trains the steps after it. Says whether any went.
   */
  truncateAfter(step: number): boolean {
    const nt = upperBound(this.train.step, step);
    const ne = upperBound(this.eval.step, step);
    let namedDropped = false;
    for (const table of this.named.values()) namedDropped = table.truncateAfter(step) || namedDropped;
    const dropped = nt !== this.train.step.length || ne !== this.eval.step.length || namedDropped;
    if (!dropped) return false;
    this.train.step.length = nt;
    for (const k of TRAIN_KEYS) this.train[k].length = nt;
    this.memGiB.length = nt;
    this.eval.step.length = ne;
    for (const k of EVAL_KEYS) this.eval[k].length = ne;
    this.loss.truncateAfter(step);
    return true;
  }

  /** Copy rows of `other` newer than this series' newest (rows this one has already win). */
  appendNewer(other: RunSeries): void {
    const lastT = this.lastTrainStep;
    const t = other.train;
    for (let i = lastT == null ? 0 : lowerBound(t.step, lastT + 1); i < t.step.length; i++) {
      this.addTrain(t.step[i], {
        loss: t.loss[i],
        lr: t.lr[i],
        grad_norm: t.grad_norm[i],
        tokens_per_s: t.tokens_per_s[i],
        mem_bytes: t.mem_bytes[i],
        tokens: t.tokens[i],
        time_s: t.time_s[i],
      });
    }
    for (const [name, table] of other.named) {
      const mine = this.named.get(name);
      const last = mine && mine.x.length ? mine.x[mine.x.length - 1] : null;
      table.x.forEach((step, i) => {
        if (last != null && step <= last) return;
        table.ys.forEach((col, c) => {
          if (col[i] != null) this.setNamed(name, step, c, col[i]);
        });
      });
    }
    const lastE = this.lastEvalStep;
    const e = other.eval;
    for (let i = lastE == null ? 0 : lowerBound(e.step, lastE + 1); i < e.step.length; i++) {
      this.addEval(e.step[i], { loss: e.loss[i], perplexity: e.perplexity[i], tokens: e.tokens[i], time_s: e.time_s[i] });
    }
  }
}

/** Minimum of the non-null values (null when there is none). */
export function minOf(values: ArrayLike<Num>): number | null {
  let best: number | null = null;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v != null && Number.isFinite(v) && (best == null || v < best)) best = v;
  }
  return best;
}

/** Maximum of the non-null values (null when there is none). */
export function maxOf(values: ArrayLike<Num>): number | null {
  let best: number | null = null;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v != null && Number.isFinite(v) && (best == null || v > best)) best = v;
  }
  return best;
}
