import { describe, expect, it } from "vitest";
import { AlignedTable, RunSeries, StepRate, alignSeries, emptyEval, emptyTrain, lowerBound, maxOf, minOf, upsertRow, TRAIN_KEYS } from "./series";

const N = 100_000;

function trainRow(step: number) {
  return { loss: 3 - step / N, lr: 1e-4, grad_norm: 1, tokens_per_s: 1000, mem_bytes: 2 ** 30, tokens: step * 512, time_s: step / 10 };
}

describe("upsertRow", () => {
  it("appends 100k newer steps in order and replaces repeated ones in place", () => {
    const cols = emptyTrain();
    let appended = 0;
    for (let s = 1; s <= N; s++) if (upsertRow(cols, TRAIN_KEYS, s, trainRow(s)) === "append") appended++;
    expect(appended).toBe(N);
    expect(cols.step.length).toBe(N);
    // History overlapping live events: the same 1000 steps again change nothing in length.
    let replaced = 0;
    for (let s = N - 999; s <= N; s++) if (upsertRow(cols, TRAIN_KEYS, s, { ...trainRow(s), loss: 0.5 }) === "replace") replaced++;
    expect(replaced).toBe(1000);
    expect(cols.step.length).toBe(N);
    for (const k of TRAIN_KEYS) expect(cols[k].length).toBe(N);
    expect(cols.loss[N - 1]).toBe(0.5);
    expect(cols.loss[N - 1001]).toBeCloseTo(3 - (N - 1000) / N);
    // Strictly increasing steps throughout.
    for (let i = 1; i < N; i++) if (cols.step[i] <= cols.step[i - 1]) throw new Error(`not sorted at ${i}`);
  });

  it("inserts a missing step in order", () => {
    const cols = emptyEval();
    upsertRow(cols, ["loss", "perplexity", "tokens", "time_s"] as const, 10, { loss: 1, perplexity: 2, tokens: 3, time_s: 4 });
    upsertRow(cols, ["loss", "perplexity", "tokens", "time_s"] as const, 30, { loss: 3, perplexity: 2, tokens: 3, time_s: 4 });
    expect(upsertRow(cols, ["loss", "perplexity", "tokens", "time_s"] as const, 20, { loss: 2, perplexity: 2, tokens: 3, time_s: 4 })).toBe("insert");
    expect(cols.step).toEqual([10, 20, 30]);
    expect(cols.loss).toEqual([1, 2, 3]);
  });
});

describe("lowerBound", () => {
  it("finds the first index not below x", () => {
    expect(lowerBound([1, 3, 5], 0)).toBe(0);
    expect(lowerBound([1, 3, 5], 3)).toBe(1);
    expect(lowerBound([1, 3, 5], 4)).toBe(2);
    expect(lowerBound([1, 3, 5], 9)).toBe(3);
  });
});

describe("AlignedTable", () => {
  it("keeps one x column for train and eval and a stable data reference", () => {
    const t = new AlignedTable(2);
    const ref = t.data;
    for (let s = 1; s <= N; s++) {
      t.set(s, 0, s);
      if (s % 100 === 0) t.set(s, 1, -s);
    }
    t.set(0, 1, 42); // the eval before any update, inserted at the front
    expect(t.data).toBe(ref);
    expect(t.length).toBe(N + 1);
    expect(t.x[0]).toBe(0);
    expect(t.ys[0][0]).toBeNull();
    expect(t.ys[1][0]).toBe(42);
    expect(t.ys[1][100]).toBe(-100);
    expect(t.ys[1][101]).toBeNull();
    expect(ref[0].length).toBe(N + 1);
    expect(ref[2].length).toBe(N + 1);
  });
});

describe("alignSeries", () => {
  it("merges two 100k-point curves with different x onto one sorted column", () => {
    const ax = Array.from({ length: N }, (_, i) => i * 2); // even
    const bx = Array.from({ length: N }, (_, i) => i * 3); // multiples of 3
    const [xs, a, b] = alignSeries([
      { x: ax, y: ax.map((x) => x + 0.5) },
      { x: bx, y: bx.map((x) => -x) },
    ]);
    // Union size: |A| + |B| - |A ∩ B| (multiples of 6 below 2N).
    const common = Math.ceil((2 * (N - 1) + 1) / 6);
    expect(xs.length).toBe(2 * N - common);
    for (let i = 1; i < xs.length; i++) if (xs[i] <= xs[i - 1]) throw new Error(`not increasing at ${i}`);
    let na = 0;
    let nb = 0;
    for (let i = 0; i < xs.length; i++) {
      if (a[i] != null) {
        na++;
        if (a[i] !== xs[i] + 0.5) throw new Error(`a wrong at ${xs[i]}`);
      }
      if (b[i] != null) {
        nb++;
        if (b[i] !== -xs[i]) throw new Error(`b wrong at ${xs[i]}`);
      }
    }
    expect(na).toBe(N);
    expect(nb).toBe(N);
  });

  it("skips null x, keeps the last y of a repeated x and survives unsorted input", () => {
    const [xs, y] = alignSeries([{ x: [3, null, 1, 2, 2], y: [30, 99, 10, 20, 21] }]);
    expect(xs).toEqual([1, 2, 3]);
    expect(y).toEqual([10, 21, 30]);
  });
});

describe("RunSeries", () => {
  it("loads history, dedupes live steps already loaded and appends newer ones", () => {
    const train = emptyTrain();
    for (let s = 1; s <= N; s++) upsertRow(train, TRAIN_KEYS, s, trainRow(s));
    const evalCols = { step: [0, 50_000, 100_000], loss: [4, 2, 1.5], perplexity: [54, 7.4, 4.5], tokens: [0, 1, 2], time_s: [0, 1, 2] };
    const series = RunSeries.fromMetrics({ train, eval: evalCols });
    expect(series.loss.length).toBe(N + 1); // steps 0..N
    expect(series.loss.ys[1][0]).toBe(4);
    expect(series.memGiB.length).toBe(N);
    expect(series.memGiB[0]).toBe(1);

    // Live events replayed from before the load arrived (steps ≤ N) and new ones.
    for (let s = N - 10; s <= N + 10; s++) {
      series.addStepEvent({ event: "step", step: s, loss: 1, lr: 1e-4, grad_norm: 1, tokens_per_s: 1, mem_bytes: 2 ** 31, epoch: 1, tokens: s, metrics: {} }, s);
    }
    expect(series.train.step.length).toBe(N + 10);
    expect(series.memGiB.length).toBe(N + 10);
    expect(series.memGiB[N + 9]).toBe(2);
    expect(series.loss.length).toBe(N + 11);
    expect(series.lastTrainStep).toBe(N + 10);

    series.addEvalEvent({ event: "eval", step: N + 10, eval_loss: 1.2, perplexity: 3.3, metrics: {} }, 5);
    expect(series.eval.tokens[series.eval.step.length - 1]).toBe(N + 10);
    expect(series.loss.ys[1][series.loss.length - 1]).toBe(1.2);
  });

  it("appendNewer copies only rows beyond its own last step", () => {
    const a = new RunSeries();
    const b = new RunSeries();
    for (let s = 1; s <= 5; s++) a.addTrain(s, trainRow(s));
    for (let s = 3; s <= 8; s++) b.addTrain(s, { ...trainRow(s), loss: 100 });
    a.appendNewer(b);
    expect(a.train.step).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(a.train.loss[2]).not.toBe(100);
    expect(a.train.loss[5]).toBe(100);
  });
});

describe("StepRate", () => {
  it("estimates seconds left from the recent step rate", () => {
    const r = new StepRate();
    expect(r.eta(0, 100)).toBeNull();
    r.push(0, 0);
    r.push(10_000, 20); // 2 steps/s
    expect(r.rate()).toBeCloseTo(2);
    expect(r.eta(20, 100)).toBeCloseTo(40);
    expect(r.eta(100, 100)).toBe(0);
    r.push(11_000, 5); // resumed from an earlier checkpoint
    expect(r.rate()).toBeNull();
  });
});

describe("minOf/maxOf", () => {
  it("ignore nulls", () => {
    expect(minOf([null, 3, 1, null])).toBe(1);
    expect(maxOf([null, 3, 1])).toBe(3);
    expect(minOf([null])).toBeNull();
  });
});

describe("RunSeries named metrics", () => {
  const step = (s: number, acc: number) => ({
    event: "step" as const,
    step: s,
    loss: 2,
    lr: 1e-4,
    grad_norm: 1,
    tokens_per_s: 100,
    mem_bytes: 1,
    epoch: 0,
    tokens: 10 * s,
    metrics: { token_accuracy: acc },
  });

  it("reads them from history and from live events, train and eval side by side", () => {
    const r = RunSeries.fromMetrics({
      train: emptyTrain(),
      eval: emptyEval(),
      named: [{ name: "token_accuracy", train_step: [1, 2], train: [0.1, 0.2], eval_step: [0, 2], eval: [0.05, 0.25] }],
    });
    r.addStepEvent(step(3, 0.3), 3);
    r.addEvalEvent({ event: "eval", step: 3, eval_loss: 1, perplexity: Math.E, metrics: { token_accuracy: 0.35 } }, 3);
    const t = r.named.get("token_accuracy")!;
    expect(t.data).toEqual([
      [0, 1, 2, 3],
      [null, 0.1, 0.2, 0.3],
      [0.05, null, 0.25, 0.35],
    ]);
  });

  it("forgets what came after a resumed run's checkpoint, and takes newer rows from another copy", () => {
    const a = new RunSeries();
    for (let s = 1; s <= 4; s++) a.addStepEvent(step(s, s / 10), s);
    expect(a.truncateAfter(2)).toBe(true);
    expect(a.named.get("token_accuracy")!.x).toEqual([1, 2]);
    const b = new RunSeries();
    for (let s = 1; s <= 5; s++) b.addStepEvent(step(s, 1), s);
    a.appendNewer(b);
    expect(a.named.get("token_accuracy")!.data[1]).toEqual([0.1, 0.2, 1, 1, 1]);
  });
});
