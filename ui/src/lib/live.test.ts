import { describe, expect, it } from "vitest";
import { createLive, STALL_MS } from "./live.svelte";
import type { QueueUpdate, RunMetrics, RunView, TrainEvent } from "./ipc";

function setup() {
  let now = 1_000_000;
  let handler: ((u: QueueUpdate) => void) | null = null;
  const store = createLive({
    subscribe: (h) => {
      handler = h;
      return Promise.resolve(() => {});
    },
    positions: () => Promise.resolve([]),
    now: () => now,
  });
  return {
    store,
    emit(u: QueueUpdate) {
      if (!handler) throw new Error("not subscribed");
      handler(u);
    },
    advance(ms: number) {
      now += ms;
    },
    get now() {
      return now;
    },
  };
}

function step(s: number, loss = 2): TrainEvent {
  return { event: "step", step: s, loss, lr: 1e-4, grad_norm: 0.5, tokens_per_s: 900, mem_bytes: 3 * 2 ** 30, epoch: 0, tokens: s * 100, metrics: {} };
}

function view(id: string, over: Partial<RunView> = {}): RunView {
  return {
    id, status: "running", method: "lora", model: "m1", dataset: "d1", config: {}, steps_done: 3, best_eval_loss: null,
    final_train_loss: null, tokens_per_s: null, peak_mem_bytes: null, created_at: "2025-01-01 10:00:00", finished_at: null,
    total_steps: 100, first_eval_loss: null, last_eval_loss: null, trainable_params: null, total_params: null, elapsed_s: null,
    adapter_bytes: null, run_dir: "/r", error: null, tags: [], notes: null, dataset_sha256: null, app_version: null, ...over,
  } as RunView;
}

describe("live store", () => {
  it("subscribes once however often start is called", () => {
    let subscriptions = 0;
    const store = createLive({
      subscribe: () => {
        subscriptions++;
        return Promise.resolve(() => {});
      },
      positions: () => Promise.resolve([]),
      now: () => 0,
    });
    store.start();
    store.start();
    store.stop();
    expect(subscriptions).toBe(1);
  });

  it("appends events to the series and moves step, loss and ETA", () => {
    const t = setup();
    t.store.start();
    t.emit({ update: "queued", run_id: "run-1", device: "cpu", position: 0 });
    expect(t.store.run("run-1")?.status).toBe("queued");
    expect(t.store.activeRunId()).toBeNull();

    t.emit({
      update: "events",
      run_id: "run-1",
      events: [{ event: "started", step: 0, total_steps: 100, train_records: 10, eval_records: 2, trainable_params: 1000, total_params: 9000, resumed_from: null }],
    });
    expect(t.store.activeRunId()).toBe("run-1");
    for (let s = 1; s <= 10; s++) {
      t.advance(1000); // one step per second
      t.emit({ update: "events", run_id: "run-1", events: [step(s, 3 - s / 10)] });
    }
    const r = t.store.run("run-1")!;
    expect(r.status).toBe("running");
    expect(r.step).toBe(10);
    expect(r.total).toBe(100);
    expect(r.loss).toBeCloseTo(2);
    expect(r.tokensPerS).toBe(900);
    expect(r.etaS).toBeCloseTo(90); // 90 steps left at 1 step/s
    const d = t.store.data("run-1")!;
    expect(d.series.train.step).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(d.series.train.time_s[9]).toBeCloseTo(10);
    expect(d.series.loss.length).toBe(10);

    t.emit({ update: "events", run_id: "run-1", events: [{ event: "eval", step: 10, eval_loss: 1.9, perplexity: 6.7, metrics: {} }, { event: "sample", step: 10, prompt: "Hi", text: "Hello" }] });
    expect(d.series.eval.step).toEqual([10]);
    expect(d.series.eval.tokens).toEqual([1000]);
    expect(d.series.loss.ys[1][9]).toBe(1.9);
    expect(d.samples).toEqual([{ step: 10, prompt: "Hi", text: "Hello" }]);
    expect(t.store.run("run-1")!.evalLoss).toBe(1.9);
  });

  it("dedupes live steps against loaded history", () => {
    const t = setup();
    t.store.start();
    // Two steps arrive live before the history (which already has them) finishes loading.
    t.emit({ update: "events", run_id: "run-2", events: [step(3, 9), step(4, 9)] });
    const metrics: RunMetrics = {
      run: view("run-2", { steps_done: 3 }),
      train: { step: [1, 2, 3], loss: [3, 2.5, 2], lr: [1, 1, 1], grad_norm: [1, 1, 1], tokens_per_s: [1, 1, 1], mem_bytes: [1, 1, 1], tokens: [1, 2, 3], time_s: [1, 2, 3] },
      eval: { step: [0], loss: [3.5], perplexity: [33], tokens: [0], time_s: [0] },
      named: [],
      samples: [],
      logs: [],
      checkpoints: [],
    };
    const d = t.store.load(metrics);
    expect(d.series.train.step).toEqual([1, 2, 3, 4]);
    expect(d.series.train.loss).toEqual([3, 2.5, 2, 9]); // history wins for step 3
    // The same steps again (a batch replayed) do not add rows.
    t.emit({ update: "events", run_id: "run-2", events: [step(3, 9), step(4, 9), step(5, 1.5)] });
    expect(t.store.data("run-2")!.series.train.step).toEqual([1, 2, 3, 4, 5]);
    expect(t.store.data("run-2")!.series.loss.x).toEqual([0, 1, 2, 3, 4, 5]);
    expect(t.store.run("run-2")!.total).toBe(100);
  });

  it("takes the status of an ended update and clears the active run", () => {
    const t = setup();
    t.store.start();
    t.emit({ update: "queued", run_id: "a", device: "cpu", position: 0 });
    t.emit({ update: "queued", run_id: "b", device: "cpu", position: 1 });
    t.emit({ update: "events", run_id: "a", events: [step(1)] });
    const before = t.store.queueRev;
    t.emit({ update: "events", run_id: "a", events: [{ event: "finished", step: 1, status: "completed", summary: {} as never }] });
    expect(t.store.run("a")!.status).toBe("completed");
    t.emit({ update: "ended", run_id: "a", status: "completed", error: null });
    expect(t.store.run("a")!.status).toBe("completed");
    expect(t.store.activeRunId()).toBeNull();
    expect(t.store.queueRev).toBeGreaterThan(before);
    expect(t.store.run("b")!.position).toBe(0); // moved up
    t.emit({ update: "ended", run_id: "b", status: "failed", error: "dataset.jsonl:3: field `text` missing" });
    expect(t.store.run("b")!.status).toBe("failed");
    expect(t.store.run("b")!.error).toContain("dataset.jsonl:3");
  });

  it("flags a running run that sent nothing for over a minute", () => {
    const t = setup();
    t.store.start();
    t.emit({ update: "events", run_id: "s", events: [step(1)] });
    t.advance(STALL_MS - 1000);
    t.store.tick(t.now);
    expect(t.store.run("s")!.stalled).toBe(false);
    t.advance(2000);
    t.store.tick(t.now);
    expect(t.store.run("s")!.stalled).toBe(true);
    t.emit({ update: "events", run_id: "s", events: [step(2)] });
    expect(t.store.run("s")!.stalled).toBe(false);
    t.emit({ update: "ended", run_id: "s", status: "paused", error: null });
    t.advance(STALL_MS * 2);
    t.store.tick(t.now);
    expect(t.store.run("s")!.stalled).toBe(false);
  });

  it("waits three recent step intervals before calling slow steps stalled", () => {
    const t = setup();
    t.store.start();
    // one step every 2 minutes: a minute of silence is normal
    for (let s = 1; s <= 3; s++) {
      t.emit({ update: "events", run_id: "slow", events: [step(s)] });
      t.advance(120_000);
    }
    t.store.tick(t.now); // 2 min since the last step
    expect(t.store.run("slow")!.stalled).toBe(false);
    t.advance(3 * 120_000 - 120_000 - 1000);
    t.store.tick(t.now);
    expect(t.store.run("slow")!.stalled).toBe(false);
    t.advance(2000);
    t.store.tick(t.now);
    expect(t.store.run("slow")!.stalled).toBe(true);
  });

  it("drops what came after the checkpoint when a run resumes from it, in place", () => {
    const t = setup();
    t.store.start();
    const ev: TrainEvent[] = [];
    for (let s = 1; s <= 10; s++) ev.push(step(s, 3 - s / 10));
    ev.push(
      { event: "eval", step: 5, eval_loss: 2.5, perplexity: 12, metrics: {} },
      { event: "sample", step: 5, prompt: "p", text: "five" },
      { event: "checkpoint", step: 5, path: "/r/ckpt-5", best: true },
      { event: "log", step: 5, level: "info", message: "saved 5" },
    );
    t.emit({ update: "events", run_id: "r", events: ev });
    t.emit({
      update: "events",
      run_id: "r",
      events: [
        { event: "eval", step: 8, eval_loss: 2.2, perplexity: 9, metrics: {} },
        { event: "sample", step: 8, prompt: "p", text: "eight" },
        { event: "checkpoint", step: 8, path: "/r/ckpt-8", best: true },
        { event: "log", step: 9, level: "info", message: "late" },
      ],
    });
    t.emit({ update: "ended", run_id: "r", status: "interrupted", error: null });
    const d = t.store.data("r")!;
    const { train, eval: ev2, loss, memGiB } = d.series;
    const samples = d.samples;
    const lossData = loss.data;
    const rev = t.store.run("r")!.rev;

    t.emit({ update: "queued", run_id: "r", device: "cpu", position: 0 });
    t.emit({
      update: "events",
      run_id: "r",
      events: [{ event: "started", step: 5, total_steps: 20, train_records: 10, eval_records: 2, trainable_params: 1, total_params: 2, resumed_from: 5 }],
    });
    const r = t.store.run("r")!;
    expect(r.rev).toBeGreaterThan(rev);
    expect(r.step).toBe(5);
    // the same arrays (charts hold them), shortened
    const after = t.store.data("r")!;
    expect(after.series.train).toBe(train);
    expect(after.samples).toBe(samples);
    expect(after.series.loss.data).toBe(lossData);
    expect(train.step).toEqual([1, 2, 3, 4, 5]);
    expect(train.loss.length).toBe(5);
    expect(memGiB.length).toBe(5);
    expect(ev2.step).toEqual([5]);
    expect(lossData[0]).toEqual([1, 2, 3, 4, 5]);
    expect(lossData[1].length).toBe(5);
    expect(lossData[2].length).toBe(5);
    expect(samples.map((s) => s.text)).toEqual(["five"]);
    expect(after.checkpoints.map((c) => c.step)).toEqual([5]);
    expect(after.logs.map((l) => l.message)).toEqual(["saved 5"]);
    expect(r.evalLoss).toBe(2.5);

    t.emit({ update: "events", run_id: "r", events: [step(6, 1), step(7, 0.9)] });
    // History read before the backend deleted the old rows, and a stale steps_done.
    const metrics: RunMetrics = {
      run: view("r", { steps_done: 10 }),
      train: {
        step: [...Array(10).keys()].map((i) => i + 1),
        loss: Array(10).fill(3), lr: Array(10).fill(1), grad_norm: Array(10).fill(1), tokens_per_s: Array(10).fill(1),
        mem_bytes: Array(10).fill(1), tokens: Array(10).fill(1), time_s: Array(10).fill(1),
      },
      eval: { step: [5, 8], loss: [2.5, 2.2], perplexity: [12, 9], tokens: [1, 1], time_s: [1, 1] },
      named: [],
      samples: [{ step: 5, prompt: "p", text: "five" }, { step: 8, prompt: "p", text: "eight" }],
      logs: [{ step: 9, level: "info", message: "late" }],
      checkpoints: [{ step: 8, path: "/r/ckpt-8", best: true }],
    };
    const loaded = t.store.load(metrics);
    expect(loaded.series.train.step).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(loaded.series.train.loss.slice(5)).toEqual([1, 0.9]);
    expect(loaded.series.eval.step).toEqual([5]);
    expect(loaded.samples.map((s) => s.step)).toEqual([5]);
    // what history lacks up to the checkpoint comes from what arrived live; nothing after it
    expect(loaded.logs.map((l) => l.message)).toEqual(["saved 5"]);
    expect(loaded.checkpoints.map((c) => c.step)).toEqual([5]);
    expect(t.store.run("r")!.step).toBe(7); // not the stale 10
  });

  it("keeps a queued status from the queue over the paused view a resume returns", () => {
    const t = setup();
    t.store.start();
    t.emit({ update: "ended", run_id: "p", status: "paused", error: null });
    // run_resume queues the run (the update arrives first), then returns the database row
    t.emit({ update: "queued", run_id: "p", device: "cpu", position: 0 });
    t.store.noteView(view("p", { status: "paused" }));
    expect(t.store.run("p")!.status).toBe("queued");
    // a view after an ended update is taken as it is
    t.emit({ update: "ended", run_id: "p", status: "cancelled", error: null });
    t.store.noteView(view("p", { status: "cancelled" }));
    expect(t.store.run("p")!.status).toBe("cancelled");
  });
});
