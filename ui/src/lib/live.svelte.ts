// The live queue state: one subscription to `onQueue` (started once by the shell), kept per run.
// Small fields (status, step, ETA, …) are reactive; the big metric arrays are plain arrays in a
// RunSeries that only ever grow by push, and `rev` (reactive) says when they changed, so a chart
// redraws with `setData` instead of Svelte proxying 100k numbers.
import { SvelteMap } from "svelte/reactivity";
import { api, onQueue, type QueueUpdate, type RunMetrics, type RunView, type TrainEvent } from "./ipc";
import { dropRowsAfter, RunSeries, StepRate, type CheckpointRow, type LogRow, type SampleRow } from "./series";
import type { RunState } from "./bindings/RunState";

/** A running run that sent nothing for this long (or for 3 of its recent step intervals,
 *  whichever is longer) says it is stalled. */
export const STALL_MS = 60_000;
/** How many recent step intervals of silence make a run with slow steps stalled. */
const STALL_INTERVALS = 3;
/** Logs kept per run in memory (the oldest go first); the database keeps them all. */
const MAX_LOGS = 5_000;
/** Statuses a run leaves only by being queued or started again. */
const TERMINAL = new Set<string>(["completed", "cancelled", "paused", "failed", "diverged", "interrupted"] satisfies RunState[]);

export interface LiveRun {
  id: string;
  /** RunView status; null until known. */
  status: string | null;
  /** The status came from a queue update (fresher than a RunView read earlier). */
  fromQueue: boolean;
  device: string | null;
  /** Place in its device's queue (0 = training now or next); null once it left. */
  position: number | null;
  step: number | null;
  total: number | null;
  loss: number | null;
  evalLoss: number | null;
  tokensPerS: number | null;
  memBytes: number | null;
  /** Seconds left at the current step rate, as of the last step. */
  etaS: number | null;
  stalled: boolean;
  error: string | null;
  trainableParams: number | null;
  totalParams: number | null;
  hasCheckpoint: boolean;
  /** Wall-clock ms of the last event (or of learning that it runs). */
  lastEventMs: number | null;
  /** Bumped whenever `data(id)` changed: read it to redraw. */
  rev: number;
}

/** The non-reactive part: columns, samples, logs and checkpoints. */
export interface LiveData {
  series: RunSeries;
  samples: SampleRow[];
  logs: LogRow[];
  checkpoints: CheckpointRow[];
  /** History from `api.runMetrics` was merged in. */
  loaded: boolean;
}

interface Clock {
  rate: StepRate;
  /** Seconds of training at `anchorMs` (live rows get time_s = base + elapsed since anchor). */
  timeBase: number;
  anchorMs: number | null;
}

export interface LiveDeps {
  subscribe: (handler: (u: QueueUpdate) => void) => Promise<() => void>;
  positions: () => Promise<[string, string[]][]>;
  now: () => number;
}

export type LiveStore = ReturnType<typeof createLive>;

export function createLive(deps: LiveDeps = { subscribe: onQueue, positions: () => api.queuePositions(), now: () => Date.now() }) {
  const runs = new SvelteMap<string, LiveRun>();
  const data = new Map<string, LiveData>();
  const clocks = new Map<string, Clock>();
  /** Runs whose `started` event arrived here: every row after it came live too. */
  const startedSeen = new Set<string>();
  /** A run resumed from the checkpoint at this step: history rows after it are gone. */
  const cuts = new Map<string, number>();
  const counters = $state({ queue: 0, error: null as string | null });
  let started = false;
  let timer: ReturnType<typeof setInterval> | null = null;

  function ensure(id: string): LiveRun {
    let r = runs.get(id);
    if (!r) {
      const fresh = $state<LiveRun>({
        id,
        status: null,
        fromQueue: false,
        device: null,
        position: null,
        step: null,
        total: null,
        loss: null,
        evalLoss: null,
        tokensPerS: null,
        memBytes: null,
        etaS: null,
        stalled: false,
        error: null,
        trainableParams: null,
        totalParams: null,
        hasCheckpoint: false,
        lastEventMs: null,
        rev: 0,
      });
      runs.set(id, fresh);
      r = fresh;
    }
    return r;
  }

  function ensureData(id: string): LiveData {
    let d = data.get(id);
    if (!d) {
      d = { series: new RunSeries(), samples: [], logs: [], checkpoints: [], loaded: false };
      data.set(id, d);
    }
    return d;
  }

  function clockOf(id: string): Clock {
    let c = clocks.get(id);
    if (!c) {
      c = { rate: new StepRate(), timeBase: 0, anchorMs: null };
      clocks.set(id, c);
    }
    return c;
  }

  /** Seconds of training now, counted from the newest known time_s. */
  function timeNow(id: string, now: number): number {
    const c = clockOf(id);
    if (c.anchorMs == null) {
      c.timeBase = ensureData(id).series.lastTime ?? 0;
      c.anchorMs = now;
    }
    return c.timeBase + (now - c.anchorMs) / 1000;
  }

  function setStatus(r: LiveRun, status: string) {
    r.status = status;
    r.fromQueue = true;
    if (status !== "running") r.stalled = false;
  }

  function applyEvent(r: LiveRun, d: LiveData, e: TrainEvent, now: number) {
    r.lastEventMs = now;
    if (e.event === "started") {
      startedSeen.add(r.id);
      const last = d.series.lastTrainStep;
      // Resumed from an earlier checkpoint: the backend deleted what came after it, so must we.
      if (e.resumed_from != null || (last != null && e.step < last)) {
        const cut = e.resumed_from ?? e.step;
        cuts.set(r.id, cut);
        truncate(r, d, cut);
      }
      setStatus(r, "running");
      r.error = null;
      r.total = e.total_steps;
      r.step = e.step;
      r.trainableParams = e.trainable_params;
      r.totalParams = e.total_params;
      const c = clockOf(r.id);
      c.rate.clear();
      c.timeBase = d.series.lastTime ?? 0;
      c.anchorMs = now;
      return;
    }
    if (e.event !== "finished" && (r.status == null || !TERMINAL.has(r.status))) setStatus(r, "running");
    switch (e.event) {
      case "step": {
        d.series.addStepEvent(e, timeNow(r.id, now));
        const c = clockOf(r.id);
        c.rate.push(now, e.step);
        r.step = e.step;
        r.loss = e.loss;
        r.tokensPerS = e.tokens_per_s;
        r.memBytes = e.mem_bytes;
        r.etaS = c.rate.eta(e.step, r.total);
        break;
      }
      case "eval":
        d.series.addEvalEvent(e, timeNow(r.id, now));
        r.evalLoss = e.eval_loss;
        break;
      case "sample":
        d.samples.push({ step: e.step, prompt: e.prompt, text: e.text });
        break;
      case "log":
        d.logs.push({ step: e.step, level: e.level, message: e.message });
        if (d.logs.length > MAX_LOGS) d.logs.splice(0, d.logs.length - MAX_LOGS);
        break;
      case "checkpoint":
        d.checkpoints.push({ step: e.step, path: e.path, best: e.best });
        r.hasCheckpoint = true;
        break;
      case "finished":
        setStatus(r, e.status);
        r.step = e.step;
        r.etaS = null;
        break;
    }
  }

  /** Drop every row after `step` from `d`, in place, and take the latest values left. */
  function truncate(r: LiveRun, d: LiveData, step: number): void {
    d.series.truncateAfter(step);
    dropRowsAfter(d.samples, step);
    dropRowsAfter(d.logs, step);
    dropRowsAfter(d.checkpoints, step);
    r.loss = lastNonNull(d.series.train.loss);
    r.evalLoss = lastNonNull(d.series.eval.loss);
    r.tokensPerS = lastNonNull(d.series.train.tokens_per_s);
    r.memBytes = lastNonNull(d.series.train.mem_bytes);
    r.etaS = null;
    r.rev++;
  }

  /** Apply one queue update (the subscription calls this; tests call it directly). */
  function handle(u: QueueUpdate): void {
    const now = deps.now();
    const r = ensure(u.run_id);
    switch (u.update) {
      case "queued":
        setStatus(r, "queued");
        r.device = u.device;
        r.position = u.position;
        r.error = null;
        r.lastEventMs = now;
        counters.queue++;
        break;
      case "events": {
        const d = ensureData(u.run_id);
        for (const e of u.events) applyEvent(r, d, e, now);
        r.stalled = false;
        r.rev++;
        break;
      }
      case "ended": {
        setStatus(r, u.status);
        r.error = u.error ?? null;
        r.etaS = null;
        const was = r.position;
        r.position = null;
        if (r.device != null) {
          for (const other of runs.values()) {
            if (other !== r && other.device === r.device && other.position != null && other.position > (was ?? 0)) {
              other.position--;
            }
          }
        }
        clocks.delete(u.run_id);
        r.rev++;
        counters.queue++;
        break;
      }
    }
  }

  /** Silence longer than this means stalled: a minute, or 3 recent step intervals when steps are slow. */
  function stallAfterMs(id: string): number {
    const rate = clocks.get(id)?.rate.rate() ?? null;
    return rate ? Math.max(STALL_MS, (STALL_INTERVALS * 1000) / rate) : STALL_MS;
  }

  /** Re-evaluate the stalled flags (a timer calls this every few seconds). */
  function tick(now = deps.now()): void {
    for (const r of runs.values()) {
      const stalled = r.status === "running" && r.lastEventMs != null && now - r.lastEventMs > stallAfterMs(r.id);
      if (r.stalled !== stalled) r.stalled = stalled;
    }
  }

  return {
    /** Subscribe to the queue (once; later calls do nothing). */
    start(): void {
      if (started) return;
      started = true;
      deps.subscribe(handle).then(
        () => {},
        (e: unknown) => (counters.error = String(e)),
      );
      deps.positions().then(
        (lanes) => {
          for (const [device, ids] of lanes) {
            ids.forEach((id, i) => {
              const r = ensure(id);
              if (r.fromQueue) return;
              r.device = device;
              r.position = i;
              if (i > 0) r.status = "queued";
            });
          }
        },
        () => {},
      );
      if (typeof setInterval === "function") timer = setInterval(() => tick(), 5_000);
    },
    stop(): void {
      if (timer) clearInterval(timer);
      timer = null;
    },
    handle,
    tick,
    /** The run training now (the most recently active one), or null. */
    activeRunId(): string | null {
      let best: LiveRun | null = null;
      for (const r of runs.values()) {
        if (r.status === "running" && (best == null || (r.lastEventMs ?? 0) > (best.lastEventMs ?? 0))) best = r;
      }
      return best?.id ?? null;
    },
    /** Reactive live state of a run (undefined until something is known of it). */
    run(id: string): LiveRun | undefined {
      return runs.get(id);
    },
    /** Plain (non-reactive) series, samples and logs; read `run(id).rev` to follow changes. */
    data(id: string): LiveData | undefined {
      return data.get(id);
    },
    /** Bumped on every `queued` and `ended` update: lists of runs refresh on it. */
    get queueRev(): number {
      return counters.queue;
    },
    /** A RunView just returned by an action (stop, pause, resume) is the newest status known;
     *  the queue's next update replaces it. A queued or running status that came from the queue
     *  is kept: the view was read from the database, which a resumed run's worker has not
     *  updated yet (it still says paused), and the queue's `ended` will say when it stops. */
    noteView(v: RunView): void {
      const r = ensure(v.id);
      if (r.fromQueue && r.status != null && !TERMINAL.has(r.status)) return;
      r.status = v.status;
      r.fromQueue = false;
      if (v.status !== "running") r.stalled = false;
    },
    /** Why the subscription failed, if it did. */
    get error(): string | null {
      return counters.error;
    },
    /**
     * Merge a run's history with what arrived live. History is the truth for the steps it has;
     * live rows newer than its last step are kept (they arrived while it loaded). Returns the
     * merged data; the run's reactive state is created or refreshed from `m.run`.
     */
    load(m: RunMetrics): LiveData {
      const now = deps.now();
      const id = m.run.id;
      const r = ensure(id);
      const before = data.get(id);
      const series = RunSeries.fromMetrics(m);
      const d: LiveData = {
        series,
        samples: m.samples.slice(),
        logs: m.logs.slice(),
        checkpoints: m.checkpoints.slice(),
        loaded: true,
      };
      // Resumed while we listened: what history has after the checkpoint may have been read
      // before the backend deleted it; the rows after it that count all came live.
      const cut = cuts.get(id);
      if (cut != null) {
        series.truncateAfter(cut);
        dropRowsAfter(d.samples, cut);
        dropRowsAfter(d.logs, cut);
        dropRowsAfter(d.checkpoints, cut);
      }
      if (before) {
        series.appendNewer(before.series);
        const lastSample = d.samples.length ? d.samples[d.samples.length - 1].step : -1;
        d.samples.push(...before.samples.filter((s) => s.step > lastSample));
        const lastLog = d.logs.length ? d.logs[d.logs.length - 1].step : -1;
        d.logs.push(...before.logs.filter((l) => l.step > lastLog));
        const lastCk = d.checkpoints.length ? d.checkpoints[d.checkpoints.length - 1].step : -1;
        d.checkpoints.push(...before.checkpoints.filter((c) => c.step > lastCk));
      }
      data.set(id, d);
      const c = clockOf(id);
      c.timeBase = series.lastTime ?? 0;
      c.anchorMs = now;
      if (!r.fromQueue) {
        r.status = m.run.status;
        if (m.run.status === "running") r.lastEventMs = now;
      }
      // After a `started` the live step is right; a resumed run's steps_done still counts the
      // steps that were thrown away until its first new batch is written.
      const done = startedSeen.has(id) ? 0 : m.run.steps_done;
      r.step = Math.max(r.step ?? 0, done, series.lastTrainStep ?? 0);
      r.total ??= m.run.total_steps ?? null;
      r.loss ??= lastNonNull(series.train.loss);
      r.evalLoss ??= lastNonNull(series.eval.loss);
      r.tokensPerS ??= lastNonNull(series.train.tokens_per_s) ?? m.run.tokens_per_s ?? null;
      r.trainableParams ??= m.run.trainable_params ?? null;
      r.totalParams ??= m.run.total_params ?? null;
      r.hasCheckpoint = r.hasCheckpoint || d.checkpoints.length > 0 || m.run.adapter_bytes != null;
      r.rev++;
      return d;
    },
  };
}

function lastNonNull(xs: (number | null)[]): number | null {
  for (let i = xs.length - 1; i >= 0; i--) {
    const v = xs[i];
    if (v != null) return v;
  }
  return null;
}

/** The app's one live store. */
export const live = createLive();
