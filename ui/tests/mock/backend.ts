// A stateful fake of every command in src/lib/ipc.ts, for the front end alone in a browser.
// Command names are the snake_case strings ipc.ts passes to `invoke`; arguments arrive
// camelCase as ipc.ts sends them. Errors are plain strings, like the Rust side's. Events go
// out through `emit` (with `mockIPC(…, { shouldMockEvents: true })` they reach `listen`).
import { emit } from "@tauri-apps/api/event";
import { methodFacts } from "./engine-facts";
import type {
  ChatAnswer,
  Collected,
  Comparison,
  DatasetRecord,
  DownloadUpdate,
  EstimateReport,
  ExportFormat,
  ExportReport,
  ExportUpdate,
  HubModelInfo,
  Inspection,
  MethodKind,
  MethodRow,
  ModelRecord,
  QueueUpdate,
  ReportFiles,
  RunMetrics,
  RunView,
  PlannedRun,
  ServeStatus,
  SettingSpec,
  SoupReport,
  SweepSpec,
  SweepSummary,
  SweepView,
  TokenStatus,
  TrainEvent,
} from "../../src/lib/ipc";
import type { TrainConfig } from "../../src/lib/bindings/TrainConfig";
import {
  ALL_LINEAR,
  CURATED_IDS,
  DATA_DIR,
  DEFAULT_LR,
  EXTRACT_RECORDS,
  GiB,
  KEY_INFO,
  METHOD_COLUMNS,
  METHOD_IDS,
  MiB,
  SAMPLE_DATASET,
  SMOL,
  SMOL_MODEL,
  configFor,
  curatedModels,
  doctorReport,
  hubFiles,
  keyApplies,
  renderChatML,
  samples,
  trainableParams,
} from "./fixtures";

/** Every command the backend answers: a spec checks this against ipc.ts. */
export const COMMANDS = [
  "doctor",
  "models_list",
  "models_curated",
  "models_add",
  "hub_info",
  "hub_download",
  "datasets_list",
  "datasets_samples",
  "datasets_add",
  "datasets_inspect",
  "methods_table",
  "settings_schema",
  "estimate",
  "run_start",
  "run_resume",
  "run_control",
  "runs_list",
  "run_show",
  "run_metrics",
  "run_delete",
  "run_tag",
  "run_note",
  "runs_compare",
  "runs_report",
  "queue_positions",
  "chat",
  "preference_record",
  "export_run",
  "token_status",
  "token_set",
  "token_remove",
  "serve_start",
  "serve_status",
  "serve_stop",
  "serve_add_adapter",
  "serve_remove_adapter",
  "sweep_plan",
  "sweep_start",
  "sweeps_list",
  "sweep_show",
  "soup_make",
] as const;

export type Options = {
  /** No model, dataset or run registered: the first-run state. */
  empty?: boolean;
  /** Milliseconds between training event batches (50 as the real queue). */
  batchMs?: number;
  /** Batches a run takes from start to finish. */
  batches?: number;
};

export type Call = { cmd: string; args: Record<string, unknown> };

type Series = RunMetrics["train"];
type EvalSeries = RunMetrics["eval"];

type RunState = {
  view: RunView;
  metrics: RunMetrics;
  timer: ReturnType<typeof setTimeout> | null;
  /** Training time so far, seconds. */
  time: number;
  tokens: number;
  started: boolean;
};

const USABLE_DEVICE = "cpu:0";
const USABLE_BYTES = Math.floor((16 * GiB) / 10) * 9;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A small seeded PRNG so curves look the same on every load. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function now(): string {
  return new Date().toISOString();
}

function fail(message: string): never {
  throw message;
}

function str(args: Record<string, unknown>, key: string): string {
  const v = args[key];
  if (typeof v !== "string") fail(`mock backend: argument \`${key}\` must be a string, got ${JSON.stringify(v)}`);
  return v;
}

function optStr(args: Record<string, unknown>, key: string): string | undefined {
  const v = args[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") fail(`mock backend: argument \`${key}\` must be a string, got ${JSON.stringify(v)}`);
  return v;
}

function num(args: Record<string, unknown>, key: string): number {
  const v = args[key];
  if (typeof v !== "number" || !Number.isFinite(v)) fail(`mock backend: argument \`${key}\` must be a number, got ${JSON.stringify(v)}`);
  return v;
}

function strList(args: Record<string, unknown>, key: string): string[] {
  const v = args[key];
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) fail(`mock backend: argument \`${key}\` must be a list of strings`);
  return v as string[];
}

function slug(name: string): string {
  let s = "";
  for (const c of name) {
    if (/[A-Za-z0-9]/.test(c)) s += c.toLowerCase();
    else if (s && !s.endsWith("-")) s += "-";
  }
  s = s.replace(/-+$/, "");
  return s || "model";
}

function basename(p: string): string {
  return p.replace(/[\\/]+$/, "").split(/[\\/]/).pop() ?? p;
}

// --- config `--set` handling ------------------------------------------------------------
function getKey(cfg: TrainConfig, key: string): string {
  const v = key.split(".").reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], cfg);
  if (v === null || v === undefined) return "none";
  if (Array.isArray(v)) return v.join(",");
  return String(v);
}

function setPair(cfg: TrainConfig, pair: string): void {
  const eq = pair.indexOf("=");
  if (eq < 1) fail(`--set ${pair}: expected key=value`);
  const key = pair.slice(0, eq).trim();
  const raw = pair.slice(eq + 1).trim();
  const info = KEY_INFO.find((k) => k.key === key);
  if (!info) fail(`--set ${pair}: unknown key \`${key}\` (known: ${KEY_INFO.map((k) => k.key).join(", ")})`);
  const nullable = ["max_steps", "lr", "weight_decay", "lora.init"].includes(key);
  let value: unknown;
  if (nullable && raw === "none") value = null;
  else if (info.kind === "integer") {
    if (!/^\d+$/.test(raw)) fail(`--set ${pair}: \`${key}\`: \`${raw}\` is not a whole number`);
    value = Number(raw);
    if (["batch_size", "grad_accum", "seq_len", "lora.r", "max_steps"].includes(key) && value === 0) fail(`--set ${pair}: \`${key}\` must be at least 1`);
  } else if (info.kind === "number") {
    value = Number(raw);
    if (raw === "" || !Number.isFinite(value)) fail(`--set ${pair}: \`${key}\`: \`${raw}\` is not a number`);
  } else if (info.kind === "bool") {
    if (raw !== "true" && raw !== "false") fail(`--set ${pair}: \`${key}\`: \`${raw}\` is not true or false`);
    value = raw === "true";
  } else if (info.kind === "choice") {
    if (!info.choices?.includes(raw)) fail(`--set ${pair}: \`${key}\`: \`${raw}\` is not one of ${info.choices?.join(", ")}`);
    value = raw;
  } else if (key.endsWith(".targets")) {
    const list = raw === "all-linear" ? [...ALL_LINEAR] : raw.split(",").map((s) => s.trim()).filter(Boolean);
    const bad = list.find((x) => !ALL_LINEAR.includes(x));
    if (bad) fail(`--set ${pair}: \`${bad}\` is not a linear module (use ${ALL_LINEAR.join(", ")} or all-linear)`);
    value = list;
  } else if (key === "device") {
    if (!/^(cpu|cuda|metal)(:\d+)?$/.test(raw)) fail(`device \`${raw}\` is unknown (use cpu, cuda, cuda:N or metal)`);
    if (!raw.startsWith("cpu")) fail(`device \`${raw}\`: this build has no ${raw.split(":")[0]} support (rebuild with \`--features ${raw.split(":")[0]}\`)`);
    value = raw;
  } else value = raw;
  const path = key.split(".");
  let o = cfg as unknown as Record<string, unknown>;
  for (const k of path.slice(0, -1)) o = o[k] as Record<string, unknown>;
  o[path[path.length - 1]] = value;
}

function parseMethod(m: string): MethodKind {
  if (!(METHOD_IDS as string[]).includes(m)) fail(`unknown method \`${m}\` (one of ${METHOD_IDS.join(", ")})`);
  return m as MethodKind;
}

export function configWith(method: MethodKind, sets: string[]): TrainConfig {
  const cfg = configFor(method);
  for (const s of sets) setPair(cfg, s);
  return cfg;
}

const TRAIN_RECORDS = 270;
const EVAL_RECORDS = 30;
const TOKENS_PER_RECORD = 71;

function totalSteps(cfg: TrainConfig): number {
  if (cfg.max_steps) return cfg.max_steps;
  return Math.max(1, Math.ceil((cfg.epochs * TRAIN_RECORDS) / (cfg.batch_size * cfg.grad_accum)));
}

function estimateFor(cfg: TrainConfig) {
  const trainable = trainableParams(cfg);
  const qlora = cfg.method === "qlora";
  const weight = qlora ? Math.round(SMOL.params * 0.5625) + 28 * MiB : SMOL.params * 4;
  const optimizer = trainable * 16;
  const act = Math.round(cfg.batch_size * cfg.seq_len * SMOL.hidden * SMOL.layers * 4 * (cfg.gradient_checkpointing ? 2.2 : 14) * (cfg.method === "full" ? 1.15 : 1));
  const runtime = 180 * MiB + (qlora ? 64 * MiB : 0);
  const total = weight + optimizer + act + runtime;
  return {
    method: cfg.method,
    compute_dtype: cfg.dtype === "bf16" ? "bf16" : "f32",
    trainable_params: trainable,
    base_params: SMOL.params,
    trainable_percent: (trainable / SMOL.params) * 100,
    weight_bytes: weight,
    optimizer_bytes: optimizer,
    activation_bytes: act,
    runtime_bytes: runtime,
    total_bytes: total,
  };
}

// --- loss curves ------------------------------------------------------------------------
function lossAt(step: number, total: number, noise: () => number, floor: number): number {
  const p = step / Math.max(1, total);
  return floor + (2.45 - floor) * Math.exp(-4.2 * p) + (noise() - 0.5) * 0.12 * (1 - 0.6 * p);
}

function lrAt(step: number, total: number, cfg: TrainConfig): number {
  const peak = cfg.lr ?? DEFAULT_LR[cfg.method];
  const warm = Math.max(1, Math.round(total * cfg.warmup_ratio));
  if (step <= warm) return (peak * step) / warm;
  const p = (step - warm) / Math.max(1, total - warm);
  if (cfg.schedule === "constant") return peak;
  if (cfg.schedule === "linear") return peak * (1 - p);
  return peak * 0.5 * (1 + Math.cos(Math.PI * p));
}

function emptyMetrics(view: RunView): RunMetrics {
  return {
    run: view,
    train: { step: [], loss: [], lr: [], grad_norm: [], tokens_per_s: [], mem_bytes: [], tokens: [], time_s: [] },
    eval: { step: [], loss: [], perplexity: [], tokens: [], time_s: [] },
    named: [],
    samples: [],
    logs: [],
    checkpoints: [],
  };
}

function pushStep(t: Series, e: Extract<TrainEvent, { event: "step" }>, time: number): void {
  t.step.push(e.step);
  t.loss.push(e.loss);
  t.lr.push(e.lr);
  t.grad_norm.push(e.grad_norm);
  t.tokens_per_s.push(e.tokens_per_s);
  t.mem_bytes.push(e.mem_bytes);
  t.tokens.push(e.tokens);
  t.time_s.push(time);
}

function pushEval(ev: EvalSeries, step: number, loss: number, tokens: number, time: number): void {
  ev.step.push(step);
  ev.loss.push(loss);
  ev.perplexity.push(Math.exp(loss));
  ev.tokens.push(tokens);
  ev.time_s.push(time);
}

export class MockBackend {
  readonly calls: Call[] = [];
  private models: ModelRecord[];
  private datasets: DatasetRecord[];
  /** Every Playground judgement kept, in order. */
  collected: Collected[] = [];
  private runs = new Map<string, RunState>();
  private lane: string[] = [];
  private nextRun = 1;
  private token: TokenStatus = { present: false, source: "none" };
  /** The simulated OpenAI-compatible server: a client calls it about twice a second. */
  private server: { status: ServeStatus; since: number } | null = null;
  private batchMs: number;
  private batches: number;
  private sweeps: { id: string; name: string; spec: SweepSpec; created_at: string }[] = [];

  constructor(opts: Options = {}) {
    this.batchMs = opts.batchMs ?? 50;
    this.batches = opts.batches ?? 80;
    this.models = opts.empty ? [] : [{ ...SMOL_MODEL }];
    this.datasets = opts.empty ? [] : [{ ...SAMPLE_DATASET }];
    if (!opts.empty) {
      this.addFinished("lora", [], "2025-05-02T09:14:03.120Z", 0.41, 11);
      this.addFinished("dora", ["lora.r=8"], "2025-05-02T10:02:47.551Z", 0.385, 23);
    }
  }

  /** The `mockIPC` handler. */
  async handle(cmd: string, payload: unknown): Promise<unknown> {
    const args = (payload && typeof payload === "object" && !Array.isArray(payload) ? payload : {}) as Record<string, unknown>;
    this.calls.push({ cmd, args: JSON.parse(JSON.stringify(args)) as Record<string, unknown> });
    try {
      return await this.dispatch(cmd, args);
    } catch (e) {
      // Rust errors cross the bridge as plain strings; so do these.
      throw typeof e === "string" ? e : `mock backend: ${String(e)}`;
    }
  }

  private async dispatch(cmd: string, a: Record<string, unknown>): Promise<unknown> {
    switch (cmd) {
      case "doctor": {
        const r = doctorReport();
        r.database.models_registered = this.models.length;
        return r;
      }
      // --- models
      case "models_list":
        return this.models.map((m) => ({ ...m }));
      case "models_curated": {
        const device = optStr(a, "device");
        if (device) this.checkDevice(device);
        return curatedModels(USABLE_BYTES);
      }
      case "models_add":
        return this.modelsAdd(str(a, "path"), a.copy === true);
      case "hub_info":
        return this.hubInfo(str(a, "repo"));
      case "hub_download":
        return this.hubDownload(str(a, "repo"));
      // --- datasets
      case "datasets_list":
        return this.datasets.map((d) => ({ ...d }));
      case "datasets_samples":
        return samples();
      case "datasets_add":
        return this.datasetsAdd(str(a, "path"), optStr(a, "format"), optStr(a, "columns"));
      case "datasets_inspect":
        return this.inspect(str(a, "dataset"), (a.model as string | null) ?? null, num(a, "seqLen"), num(a, "n"));
      // --- methods and settings
      case "methods_table":
        return this.methodsTable(str(a, "model"), optStr(a, "device"));
      case "settings_schema":
        return this.settingsSchema(str(a, "method"), strList(a, "sets"));
      case "estimate":
        return this.estimate(str(a, "model"), str(a, "method"), strList(a, "sets"), optStr(a, "device"));
      // --- runs
      case "run_start":
        return this.runStart(str(a, "model"), str(a, "dataset"), str(a, "method"), strList(a, "sets"));
      case "run_resume":
        return this.runResume(str(a, "id"));
      case "run_control": {
        const action = str(a, "action");
        if (action !== "pause" && action !== "stop") fail(`unknown action \`${action}\` (pause or stop)`);
        return this.runControl(str(a, "id"), action);
      }
      case "runs_list":
        return [...this.runs.values()].map((r) => ({ ...r.view })).sort((x, y) => (x.created_at < y.created_at ? 1 : -1));
      case "run_show":
        return { ...this.require(str(a, "id")).view };
      case "run_metrics": {
        const r = this.require(str(a, "id"));
        return JSON.parse(JSON.stringify({ ...r.metrics, run: r.view })) as RunMetrics;
      }
      case "run_delete":
        return this.runDelete(str(a, "id"));
      case "run_tag": {
        const r = this.require(str(a, "id"));
        const tags = strList(a, "tags");
        r.view.tags = a.add === false ? r.view.tags.filter((t) => !tags.includes(t)) : [...new Set([...r.view.tags, ...tags])];
        return { ...r.view };
      }
      case "run_note": {
        const r = this.require(str(a, "id"));
        const text = str(a, "text");
        r.view.notes = text.trim() ? text : null;
        return { ...r.view };
      }
      case "runs_compare":
        return this.compare(strList(a, "ids"));
      case "runs_report": {
        const ids = strList(a, "ids");
        const by = str(a, "by");
        if (by !== "step" && by !== "tokens") fail(`--by: \`${by}\` is not step or tokens`);
        this.compare(ids);
        await sleep(200);
        const stem = `${DATA_DIR}/reports/compare-${ids.join("-")}`;
        const report: ReportFiles = {
          markdown: `${stem}/report.md`,
          charts: [`${stem}/loss-by-${by}.png`, `${stem}/loss-by-${by}.svg`],
          skipped: [],
        };
        return report;
      }
      case "queue_positions":
        return this.lane.length ? [[USABLE_DEVICE, [...this.lane]]] : [];
      // --- playground and export
      case "chat":
        return this.chat(str(a, "model"), a.adapters, str(a, "prompt"), num(a, "maxTokens"), num(a, "temperature"));
      case "preference_record":
        return this.preferenceRecord(a.collected as Collected);
      case "export_run":
        return this.exportRun(str(a, "run"), str(a, "format"), optStr(a, "dtype"));
      // --- settings
      case "token_status":
        return { ...this.token };
      case "token_set": {
        const token = str(a, "token").trim();
        if (!token) fail("the token is empty");
        if (/\s/.test(token)) fail("a Hugging Face token has no spaces; paste it again from huggingface.co/settings/tokens");
        await sleep(80);
        this.token = { present: true, source: "keychain" };
        return { ...this.token };
      }
      case "token_remove":
        await sleep(40);
        this.token = { present: false, source: "none" };
        return { ...this.token };
      // --- serve
      case "serve_start":
        return this.serveStart(str(a, "model"), strList(a, "adapters"), num(a, "port"), a.public === true, optStr(a, "apiKey") ?? null);
      case "serve_status":
        return this.server ? this.serveSnapshot() : null;
      case "serve_stop":
        await sleep(60);
        this.server = null;
        return null;
      case "serve_add_adapter":
        return this.serveAdd(str(a, "name"), str(a, "source"));
      case "serve_remove_adapter": {
        const s = this.serving();
        const name = str(a, "name");
        if (name === s.status.base) fail(`\`${name}\` is the base model; it cannot be removed`);
        if (!s.status.models.some((m) => m.id === name)) fail(`no adapter named \`${name}\` is served`);
        s.status.models = s.status.models.filter((m) => m.id !== name);
        return this.serveSnapshot();
      }
      // --- sweeps and soups
      case "sweep_plan":
        return this.sweepPlan(a.spec as SweepSpec);
      case "sweep_start":
        return this.sweepStart(a.spec as SweepSpec);
      case "sweeps_list":
        return this.sweepsList();
      case "sweep_show":
        return this.sweepShow(str(a, "id"));
      case "soup_make":
        return this.soupMake(strList(a, "runs"), a.greedy === true);
      // --- plugins the UI reaches through ipc.ts
      case "plugin:opener|reveal_item_in_dir":
        return null;
      case "plugin:dialog|open": {
        const o = (a.options ?? {}) as { directory?: boolean };
        return o.directory ? "/home/ada/models/Qwen2.5-0.5B-Instruct" : "/home/ada/data/support-chats.jsonl";
      }
      case "plugin:app|version":
        return "0.1.0";
      default: {
        const msg = `mock backend: unknown command \`${cmd}\` (add it to ui/tests/mock/backend.ts)`;
        console.error(msg);
        fail(msg);
      }
    }
  }

  // --- models -----------------------------------------------------------------------------
  private checkDevice(device: string): void {
    const [kind] = device.split(":");
    if (kind === "cpu") return;
    if (kind === "cuda" || kind === "metal") fail(`device \`${device}\`: this build has no ${kind} support (rebuild with \`--features ${kind}\`)`);
    fail(`device \`${device}\` is unknown (use cpu, cuda, cuda:N or metal)`);
  }

  private requireModel(id: string): ModelRecord {
    const m = this.models.find((x) => x.id === id || x.path === id);
    if (!m) fail(`no model \`${id}\` (see \`whetstone models list\`)`);
    return m;
  }

  private modelsAdd(path: string, copy: boolean): ModelRecord {
    const existing = this.models.find((m) => m.path === path || m.reference === path);
    if (existing) return { ...existing };
    if (/missing|does-not-exist/.test(path)) fail(`${path}: No such file or directory (os error 2)`);
    const gguf = path.toLowerCase().endsWith(".gguf");
    const stem = gguf ? basename(path).replace(/\.gguf$/i, "") : basename(path);
    let id = slug(stem);
    for (let n = 2; this.models.some((m) => m.id === id); n++) id = `${slug(stem)}-${n}`;
    const rec: ModelRecord = {
      id,
      name: stem,
      source: gguf ? "gguf" : "folder",
      reference: path,
      path: copy ? `${DATA_DIR}/models/local/${basename(path)}` : path,
      architecture: gguf ? "llama" : "qwen2",
      parameter_count: gguf ? SMOL.params : 494_032_768,
      size_bytes: gguf ? 98_362_432 : 988_097_824,
      sha256: null,
      created_at: now(),
    };
    this.models.push(rec);
    return { ...rec };
  }

  private parseRepo(repo: string): string {
    const id = repo.replace(/^hf:/, "");
    if (!/^[\w.-]+\/[\w.-]+$/.test(id)) fail(`\`${repo}\` is not a hub model id (owner/name, e.g. HuggingFaceTB/SmolLM2-135M-Instruct)`);
    return id;
  }

  private hubInfo(repo: string): HubModelInfo {
    const id = this.parseRepo(repo);
    const files = hubFiles(id);
    const gated = CURATED_IDS.find((c) => c.id === id)?.gated ?? false;
    return {
      repo: id,
      revision: "main",
      files,
      total_bytes: files.reduce((s, f) => s + f.size, 0),
      license: gated ? "llama3.2" : "apache-2.0",
      gated,
    };
  }

  private async hubDownload(repo: string): Promise<ModelRecord> {
    const info = this.hubInfo(repo);
    if (info.gated && !this.token.present)
      fail(`${info.repo} is gated: accept its licence on huggingface.co, then save a token in Settings (or \`whetstone hub login\`)`);
    const existing = this.models.find((m) => m.reference === `hf:${info.repo}`);
    if (existing) return { ...existing };
    const steps = 10;
    for (let i = 1; i <= steps; i++) {
      await sleep(60);
      const done = Math.round((info.total_bytes * i) / steps);
      const u: DownloadUpdate = {
        repo: info.repo,
        files_total: info.files.length,
        files_done: Math.min(info.files.length, Math.floor((info.files.length * i) / steps)),
        bytes_total: info.total_bytes,
        bytes_done: done,
        bytes_per_s: 48 * MiB,
        eta_s: i === steps ? 0 : (info.total_bytes - done) / (48 * MiB),
      };
      void emit("download", u);
    }
    const name = info.repo.split("/")[1];
    const rec: ModelRecord = {
      id: slug(name),
      name,
      source: "hub",
      reference: `hf:${info.repo}`,
      path: `${DATA_DIR}/models/hub/${info.repo.replace("/", "--")}`,
      architecture: name.startsWith("Qwen") ? "qwen2" : "llama",
      parameter_count: Math.round(info.total_bytes / 2),
      size_bytes: info.total_bytes,
      sha256: null,
      created_at: now(),
    };
    this.models.push(rec);
    return { ...rec };
  }

  // --- datasets ---------------------------------------------------------------------------
  private requireDataset(id: string): DatasetRecord {
    const d = this.datasets.find((x) => x.id === id || x.path === id);
    if (!d) fail(`no dataset \`${id}\` (see \`whetstone datasets list\`)`);
    return d;
  }

  private datasetsAdd(path: string, format?: string, columns?: string): DatasetRecord {
    const existing = this.datasets.find((d) => d.original_path === path || d.path === path);
    if (existing) return { ...existing };
    if (/missing|does-not-exist/.test(path)) fail(`${path}: No such file or directory (os error 2)`);
    if (/bad/.test(basename(path))) fail(`${path}:line 3: field \`output\`: missing (alpaca records need instruction and output)`);
    const ext = basename(path).split(".").pop()?.toLowerCase() ?? "";
    const fmt = format ?? (ext === "csv" ? "csv" : ext === "txt" ? "text" : "alpaca");
    if (fmt === "csv" && !columns) fail(`${path}: a CSV dataset needs --columns (e.g. prompt=question,response=answer)`);
    const name = basename(path).replace(/\.[^.]+$/, "");
    let id = slug(name);
    for (let n = 2; this.datasets.some((d) => d.id === id); n++) id = `${slug(name)}-${n}`;
    const rec: DatasetRecord = {
      id,
      name,
      original_path: path,
      path: `${DATA_DIR}/datasets/${basename(path)}`,
      format: fmt,
      columns: columns ?? null,
      records: 1200,
      dropped: 3,
      problems: JSON.stringify([
        { at: "line 88", field: "output", message: "empty" },
        { at: "line 412", field: "instruction", message: "missing" },
        { at: "line 977", field: "output", message: "empty" },
      ]),
      size_bytes: 412_337,
      sha256: "1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e",
      created_at: now(),
    };
    this.datasets.push(rec);
    return { ...rec };
  }

  /** Playground judgements: a growing library dataset per kind, as the studio keeps them. */
  private preferenceRecord(c: Collected): DatasetRecord {
    const pair = c.judgement.kind === "pair";
    if (!c.prompt.trim()) fail("the judgement cannot be kept: field `prompt`: is empty");
    if (c.judgement.kind === "pair" && c.judgement.chosen === c.judgement.rejected)
      fail("the judgement cannot be kept: field `rejected`: is identical to `chosen`, so the pair prefers nothing");
    const id = pair ? "playground-pairs" : "playground-ratings";
    let rec = this.datasets.find((d) => d.id === id);
    if (!rec) {
      const path = `${DATA_DIR}/datasets/${id}.jsonl`;
      rec = {
        id,
        name: pair ? "Playground preferences" : "Playground ratings",
        original_path: path,
        path,
        format: pair ? "preference" : "kto",
        columns: null,
        records: 0,
        dropped: 0,
        problems: "[]",
        size_bytes: 0,
        sha256: "",
        created_at: now(),
      };
      this.datasets.push(rec);
    }
    rec.records += 1;
    rec.size_bytes += 200;
    this.collected.push(c);
    return { ...rec };
  }

  private inspect(dataset: string, model: string | null, seqLen: number, n: number): Inspection {
    const d = this.requireDataset(dataset);
    if (model) this.requireModel(model);
    if (seqLen < 1) fail("`seq_len` must be at least 1");
    const min = 52;
    const max = 98;
    const bin = 8;
    const histogram = [0, 0, 0, 0, 0, 0, 14, 61, 97, 78, 36, 14];
    const over = seqLen >= max ? 0 : Math.round(((max - Math.max(seqLen, min)) / (max - min)) * d.records);
    return {
      problems: (JSON.parse(d.problems) as { at: string; field: string; message: string }[]).map(
        (p) => `${basename(d.original_path)}:${p.at}: field \`${p.field}\`: ${p.message}`,
      ),
      preview: model
        ? EXTRACT_RECORDS.slice(0, Math.max(0, n)).map(([input, output], i) => ({ at: `line ${i + 1}`, rendered: renderChatML(input, output), rejected: null, desirable: null }))
        : [],
      stats: model
        ? {
            records: d.records,
            min_tokens: min,
            mean_tokens: TOKENS_PER_RECORD + 0.4,
            max_tokens: max,
            over_seq_len: over,
            seq_len: seqLen,
            bin,
            histogram,
            trained_tokens: d.records * 22,
          }
        : null,
    };
  }

  // --- methods ----------------------------------------------------------------------------
  private methodsTable(model: string, device?: string): MethodRow[] {
    this.requireModel(model);
    if (device) this.checkDevice(device);
    return METHOD_IDS.map((id) => {
      // as the engine's table: BitFit on a bias-free model is counted with added biases
      const cfg = id === "bitfit" ? configWith(id, ["bitfit.add_biases=true"]) : configFor(id);
      const e = estimateFor(cfg);
      const [name, arch, latency, compute, useCase, difficulty] = METHOD_COLUMNS[id];
      const notes: string[] = [];
      if (id === "bitfit") notes.push("this llama model has no biases: BitFit applies only with bitfit.add_biases=true (zero-initialised biases are added and trained)");
      if (id === "qlora") notes.push("on the CPU the base is dequantized per layer in f32: less memory, slower steps; paged optimizer states are a GPU feature and not used");
      if (id === "prefix_tuning") notes.push("the reparameterisation MLP trains; exports keep only the prefixes it produces");
      return {
        id,
        name,
        trainable_params: e.trainable_params,
        trainable_percent: e.trainable_percent,
        est_memory_bytes: e.total_bytes,
        fits_device: e.total_bytes <= USABLE_BYTES,
        changes_architecture: arch,
        inference_latency: latency,
        compute,
        use_case: useCase,
        difficulty,
        phrases: methodFacts(id).phrases,
        applicable: id !== "bitfit",
        recommended: id === "lora",
        notes: notes.join("; "),
        estimate: e,
      };
    });
  }

  private settingsSchema(method: string, sets: string[]): SettingSpec[] {
    const m = parseMethod(method);
    const defaults = configFor(m);
    const cfg = configWith(m, sets);
    return KEY_INFO.map((k) => ({
      key: k.key,
      value: getKey(cfg, k.key),
      default: getKey(defaults, k.key),
      help: k.help,
      group: k.group,
      kind: k.kind,
      choices: k.choices ?? [],
      applies: keyApplies(m, k.key),
    }));
  }

  private estimate(model: string, method: string, sets: string[], device?: string): EstimateReport {
    this.requireModel(model);
    if (device) this.checkDevice(device);
    const cfg = configWith(parseMethod(method), sets);
    const e = estimateFor(cfg);
    return {
      ...e,
      est_memory_bytes: e.total_bytes,
      fits_device: e.total_bytes <= USABLE_BYTES,
      device: USABLE_DEVICE,
      device_name: doctorReport().devices[0].name,
      usable_bytes: USABLE_BYTES,
      config: cfg,
    };
  }

  // --- runs -------------------------------------------------------------------------------
  private require(id: string): RunState {
    const r = this.runs.get(id);
    if (!r) fail(`no run \`${id}\` (see \`whetstone runs list\`)`);
    return r;
  }

  private newView(model: ModelRecord, dataset: DatasetRecord, cfg: TrainConfig, created: string): RunView {
    const id = `run-${this.nextRun++}`;
    return {
      id,
      status: "queued",
      method: cfg.method,
      model: model.id,
      dataset: dataset.id,
      config: cfg,
      steps_done: 0,
      best_eval_loss: null,
      final_train_loss: null,
      tokens_per_s: null,
      peak_mem_bytes: null,
      created_at: created,
      finished_at: null,
      total_steps: totalSteps(cfg),
      first_eval_loss: null,
      last_eval_loss: null,
      trainable_params: null,
      total_params: null,
      elapsed_s: null,
      adapter_bytes: null,
      run_dir: `${DATA_DIR}/runs/${id}`,
      error: null,
      tags: [],
      notes: null,
      dataset_sha256: dataset.sha256,
      app_version: "0.1.0",
      kind: "train",
      sweep_id: null,
      settings: null,
      soup: null,
      task_metrics: [],
    };
  }

  /** A finished run with ~100 recorded steps. */
  private addFinished(method: MethodKind, sets: string[], created: string, floor: number, seed: number): void {
    const cfg = configWith(method, [...sets, "max_steps=100", "eval_every=10", "save_every=50"]);
    const view = this.newView(this.models[0], this.datasets[0], cfg, created);
    const metrics = emptyMetrics(view);
    const noise = rng(seed);
    const total = 100;
    let tokens = 0;
    let time = 0;
    const evalNoise = rng(seed + 1);
    const evalLoss = (s: number) => lossAt(s, total, evalNoise, floor + 0.04) + 0.02;
    const e0 = evalLoss(0);
    pushEval(metrics.eval, 0, e0, 0, 0);
    for (let s = 1; s <= total; s++) {
      tokens += cfg.batch_size * TOKENS_PER_RECORD;
      time += 0.71 + noise() * 0.05;
      pushStep(
        metrics.train,
        {
          event: "step",
          step: s,
          loss: lossAt(s, total, noise, floor),
          lr: lrAt(s, total, cfg),
          grad_norm: 0.35 + 1.6 * Math.exp(-s / 18) + noise() * 0.2,
          tokens_per_s: 395 + noise() * 30,
          mem_bytes: 1_610_612_736 + Math.round(noise() * 30 * MiB),
          epoch: (s * cfg.batch_size) / TRAIN_RECORDS,
          tokens,
          metrics: {},
        },
        time,
      );
      if (s % cfg.eval_every === 0) {
        pushEval(metrics.eval, s, evalLoss(s), tokens, time);
        metrics.samples.push({ step: s, prompt: EXTRACT_RECORDS[0][0], text: s < 40 ? '{"name": "Mei", "age": 69' : EXTRACT_RECORDS[0][1] });
      }
      if (s % cfg.save_every === 0) metrics.checkpoints.push({ step: s, path: `${view.run_dir}/checkpoints/last`, best: false });
    }
    metrics.logs.push({ step: 0, level: "info", message: `training ${method} on ${TRAIN_RECORDS} records, evaluating on ${EVAL_RECORDS}` });
    const evals = metrics.eval.loss.filter((x): x is number => x !== null);
    const best = Math.min(...evals);
    const trainable = trainableParams(cfg);
    Object.assign(view, {
      status: "completed",
      steps_done: total,
      total_steps: total,
      best_eval_loss: best,
      final_train_loss: metrics.train.loss[metrics.train.loss.length - 1],
      tokens_per_s: 402.7,
      peak_mem_bytes: 1_702_887_424,
      finished_at: new Date(Date.parse(created) + time * 1000 + 9000).toISOString(),
      first_eval_loss: evals[0],
      last_eval_loss: evals[evals.length - 1],
      trainable_params: trainable,
      total_params: SMOL.params,
      elapsed_s: time,
      adapter_bytes: trainable * 4 + 1840,
    });
    metrics.checkpoints.push({ step: metrics.eval.step[evals.indexOf(best)], path: `${view.run_dir}/checkpoints/best`, best: true });
    // as `whetstone evaluate` leaves it: base vs tuned on the held-out JSON answers
    view.task_metrics = [
      { metric: "json_valid", base: 0.9, tuned: 1 },
      { metric: "json_fields", base: 0.8, tuned: 0.967 },
      { metric: "exact_match", base: 0, tuned: 0.9 },
    ];
    this.runs.set(view.id, { view, metrics, timer: null, time, tokens, started: true });
  }

  private runStart(model: string, dataset: string, method: string, sets: string[]): RunView {
    const m = this.requireModel(model);
    const d = this.requireDataset(dataset);
    const cfg = configWith(parseMethod(method), sets);
    const view = this.newView(m, d, cfg, now());
    this.runs.set(view.id, { view, metrics: emptyMetrics(view), timer: null, time: 0, tokens: 0, started: false });
    this.enqueue(view.id);
    return { ...view };
  }

  private runResume(id: string): RunView {
    const r = this.require(id);
    if (!["paused", "cancelled", "interrupted"].includes(r.view.status))
      fail(`run ${id} is ${r.view.status}: only a paused, stopped or interrupted run can be resumed`);
    r.view.status = "queued";
    r.view.finished_at = null;
    this.enqueue(id);
    return { ...r.view };
  }

  private enqueue(id: string): void {
    this.lane.push(id);
    const position = this.lane.length - 1;
    setTimeout(() => {
      this.send({ update: "queued", run_id: id, device: USABLE_DEVICE, position });
      if (position === 0) this.begin(id);
    }, 30);
  }

  private send(u: QueueUpdate): void {
    void emit("queue", u);
  }

  private begin(id: string): void {
    const r = this.runs.get(id);
    if (!r || r.view.status !== "queued") return;
    const cfg = r.view.config;
    const total = r.view.total_steps ?? totalSteps(cfg);
    const resumed = r.view.steps_done > 0 ? r.view.steps_done : null;
    r.view.status = "running";
    const trainable = trainableParams(cfg);
    const first: TrainEvent[] = [
      {
        event: "started",
        step: r.view.steps_done,
        total_steps: total,
        train_records: TRAIN_RECORDS,
        eval_records: EVAL_RECORDS,
        trainable_params: trainable,
        total_params: SMOL.params,
        resumed_from: resumed,
      },
      { event: "log", step: r.view.steps_done, level: "info", message: resumed ? `resumed from step ${resumed}` : `training ${cfg.method} on ${TRAIN_RECORDS} records, evaluating on ${EVAL_RECORDS}` },
    ];
    const noise = rng(r.view.id.length * 7919 + total);
    if (!resumed) {
      const e0 = lossAt(0, total, noise, 0.45) + 0.05;
      first.push({ event: "eval", step: 0, eval_loss: e0, perplexity: Math.exp(e0), metrics: {} });
    }
    this.record(r, first);
    this.send({ update: "events", run_id: id, events: first });
    const perBatch = Math.max(1, Math.ceil(total / this.batches));
    const tick = () => {
      if (r.view.status !== "running") return;
      const events: TrainEvent[] = [];
      for (let i = 0; i < perBatch && r.view.steps_done < total; i++) {
        const s = r.view.steps_done + 1;
        r.tokens += cfg.batch_size * TOKENS_PER_RECORD;
        const step: TrainEvent = {
          event: "step",
          step: s,
          loss: lossAt(s, total, noise, 0.45),
          lr: lrAt(s, total, cfg),
          grad_norm: 0.35 + 1.6 * Math.exp(-s / 18) + noise() * 0.2,
          tokens_per_s: 395 + noise() * 30,
          mem_bytes: 1_610_612_736 + Math.round(noise() * 30 * MiB),
          epoch: (s * cfg.batch_size) / TRAIN_RECORDS,
          tokens: r.tokens, metrics: {},
        };
        events.push(step);
        r.time += this.batchMs / 1000 / perBatch;
        if ((cfg.eval_every > 0 && s % cfg.eval_every === 0) || s === total) {
          const el = lossAt(s, total, noise, 0.49) + 0.02;
          events.push({ event: "eval", step: s, eval_loss: el, perplexity: Math.exp(el), metrics: {} });
          if (cfg.sample_tokens > 0) events.push({ event: "sample", step: s, prompt: EXTRACT_RECORDS[1][0], text: s < total / 2 ? '{"name": "Aiko", "age":' : EXTRACT_RECORDS[1][1] });
        }
        if ((cfg.save_every > 0 && s % cfg.save_every === 0) || s === total) {
          const best = r.view.best_eval_loss === null || (r.metrics.eval.loss[r.metrics.eval.loss.length - 1] ?? Infinity) <= r.view.best_eval_loss;
          events.push({ event: "checkpoint", step: s, path: `${r.view.run_dir}/checkpoints/last`, best });
        }
        r.view.steps_done = s;
      }
      this.record(r, events);
      if (r.view.steps_done >= total) {
        this.finish(r, "completed", events);
      } else {
        this.send({ update: "events", run_id: id, events });
        r.timer = setTimeout(tick, this.batchMs);
      }
    };
    r.timer = setTimeout(tick, this.batchMs);
  }

  /** Fold events into the run's metrics and view. */
  private record(r: RunState, events: TrainEvent[]): void {
    for (const e of events) {
      switch (e.event) {
        case "started":
          r.view.trainable_params = e.trainable_params;
          r.view.total_params = e.total_params;
          r.view.total_steps = e.total_steps;
          break;
        case "step":
          pushStep(r.metrics.train, e, r.time);
          r.view.final_train_loss = e.loss;
          r.view.tokens_per_s = e.tokens_per_s;
          r.view.peak_mem_bytes = Math.max(r.view.peak_mem_bytes ?? 0, e.mem_bytes);
          break;
        case "eval":
          pushEval(r.metrics.eval, e.step, e.eval_loss, r.tokens, r.time);
          if (r.view.first_eval_loss === null) r.view.first_eval_loss = e.eval_loss;
          r.view.last_eval_loss = e.eval_loss;
          if (r.view.best_eval_loss === null || e.eval_loss < r.view.best_eval_loss) r.view.best_eval_loss = e.eval_loss;
          break;
        case "sample":
          r.metrics.samples.push({ step: e.step, prompt: e.prompt, text: e.text });
          break;
        case "checkpoint":
          r.metrics.checkpoints.push({ step: e.step, path: e.path, best: e.best });
          r.view.adapter_bytes = (r.view.trainable_params ?? 0) * 4 + 1840;
          break;
        case "log":
          r.metrics.logs.push({ step: e.step, level: e.level, message: e.message });
          break;
        case "finished":
          break;
      }
    }
    r.view.elapsed_s = r.time;
  }

  private finish(r: RunState, status: "completed" | "cancelled" | "paused", pending: TrainEvent[] = []): void {
    if (r.timer) clearTimeout(r.timer);
    r.timer = null;
    const v = r.view;
    v.status = status;
    v.finished_at = now();
    const events = [...pending];
    if (status !== "paused") {
      events.push({
        event: "finished",
        step: v.steps_done,
        status: status === "completed" ? "completed" : "cancelled",
        summary: {
          steps_done: v.steps_done,
          total_steps: v.total_steps ?? v.steps_done,
          first_eval_loss: v.first_eval_loss,
          last_eval_loss: v.last_eval_loss,
          best_eval_loss: v.best_eval_loss,
          best_step: null,
          final_train_loss: v.final_train_loss,
          tokens_per_s: v.tokens_per_s ?? 0,
          peak_mem_bytes: v.peak_mem_bytes ?? 0,
          elapsed_s: r.time,
          trainable_params: v.trainable_params ?? 0,
          total_params: v.total_params ?? 0,
          stopped_early: false,
          message: null,
        },
      });
    } else {
      events.push({ event: "checkpoint", step: v.steps_done, path: `${v.run_dir}/checkpoints/last`, best: false });
      this.record(r, events.slice(-1));
    }
    if (events.length) this.send({ update: "events", run_id: v.id, events });
    this.lane = this.lane.filter((x) => x !== v.id);
    this.send({ update: "ended", run_id: v.id, status, error: null });
    const next = this.lane[0];
    if (next) setTimeout(() => this.begin(next), 30);
  }

  private runControl(id: string, action: "pause" | "stop"): RunView {
    const r = this.require(id);
    if (r.view.status === "queued") {
      this.lane = this.lane.filter((x) => x !== id);
      r.view.status = action === "pause" ? "paused" : "cancelled";
      this.send({ update: "ended", run_id: id, status: r.view.status, error: null });
    } else if (r.view.status === "running") {
      this.finish(r, action === "pause" ? "paused" : "cancelled");
    } else {
      fail(`run ${id} is ${r.view.status}: only a queued or running run can be ${action === "pause" ? "paused" : "stopped"}`);
    }
    return { ...r.view };
  }

  // --- sweeps and soups --------------------------------------------------------------------
  private sweepPlan(spec: SweepSpec): PlannedRun[] {
    const method = parseMethod(spec.method);
    const keys = spec.grid.map((g) => g.key);
    for (const k of keys) {
      if (!KEY_INFO.some((i) => i.key === k) || k === "device") fail(`\`${k}\` cannot be swept: it is not a run setting`);
      if (keys.indexOf(k) !== keys.lastIndexOf(k)) fail(`\`${k}\` is swept twice`);
    }
    const count = spec.grid.reduce((n, g) => n * g.values.length, 1);
    if (count > 64) fail(`the sweep would make ${count} runs; at most 64 (fewer values, or fewer draws)`);
    if (count < 2) fail("a sweep needs at least two runs: give a key two or more values");
    const out: PlannedRun[] = [];
    for (let point = 0; point < count; point++) {
      const settings: Record<string, string> = {};
      let rest = point;
      for (const g of [...spec.grid].reverse()) {
        settings[g.key] = g.values[rest % g.values.length];
        rest = Math.floor(rest / g.values.length);
      }
      const pairs = Object.entries(settings).map(([k, v]) => `${k}=${v}`);
      let config: TrainConfig;
      try {
        config = configWith(method, [...spec.sets, ...pairs]);
      } catch (e) {
        fail(String(e).replace(/^--set /, ""));
      }
      out.push({ settings: Object.fromEntries(Object.entries(settings).sort()), config });
    }
    return out;
  }

  private sweepStart(spec: SweepSpec): SweepView {
    const planned = this.sweepPlan(spec);
    const id = `sweep-${this.sweeps.length + 1}`;
    const name = spec.name?.trim() || `${spec.method} · ${spec.grid.map((g) => g.key).join(" × ")}`;
    this.sweeps.push({ id, name, spec, created_at: now() });
    for (const p of planned) {
      const pairs = Object.entries(p.settings).map(([k, v]) => `${k}=${v}`);
      const view = this.runStart(spec.model, spec.data, spec.method, [...spec.sets, ...pairs]);
      const r = this.require(view.id);
      r.view.sweep_id = id;
      r.view.settings = p.settings;
    }
    return this.sweepShow(id);
  }

  private sweepRuns(id: string): RunView[] {
    return [...this.runs.values()].filter((r) => r.view.sweep_id === id && r.view.kind === "train").map((r) => ({ ...r.view }));
  }

  private bestOf(runs: RunView[]): RunView | null {
    return runs.filter((r) => r.best_eval_loss != null).sort((a, b) => (a.best_eval_loss ?? 0) - (b.best_eval_loss ?? 0))[0] ?? null;
  }

  private sweepShow(id: string): SweepView {
    const s = this.sweeps.find((x) => x.id === id);
    if (!s) fail(`no sweep \`${id}\` (see \`whetstone runs sweeps\`)`);
    const runs = this.sweepRuns(id);
    return { id, name: s.name, created_at: s.created_at, spec: s.spec, keys: s.spec.grid.map((g) => g.key), runs, best: this.bestOf(runs)?.id ?? null };
  }

  private sweepsList(): SweepSummary[] {
    return this.sweeps.map((s) => {
      const runs = this.sweepRuns(s.id);
      const best = this.bestOf(runs);
      return {
        id: s.id,
        name: s.name,
        created_at: s.created_at,
        runs: runs.length,
        finished: runs.filter((r) => r.status !== "queued" && r.status !== "running").length,
        best: best?.id ?? null,
        best_eval_loss: best?.best_eval_loss ?? null,
      };
    });
  }

  private async soupMake(ids: string[], greedy: boolean): Promise<SoupReport> {
    if (ids.length < 2) fail("a soup needs at least two runs");
    const runs = ids.map((id) => this.require(id).view);
    const lora = ["lora", "lora_plus"];
    for (const r of runs) {
      if (r.status === "running" || r.status === "queued") fail(`run ${r.id} is still training; make the soup when it has finished`);
      if (!lora.includes(r.method)) fail(`run ${r.id}: a \`${r.method}\` run cannot go in a soup here`);
    }
    await sleep(300);
    const sorted = [...runs].sort((a, b) => (a.best_eval_loss ?? 9) - (b.best_eval_loss ?? 9));
    const best = sorted[0].best_eval_loss ?? 1;
    const used = greedy ? sorted.slice(0, 2).map((r) => r.id) : sorted.map((r) => r.id);
    const loss = best - (greedy ? 0.02 : 0.01);
    const ingredients = sorted.map((r) => ({
      run_id: r.id,
      eval_loss: r.best_eval_loss ?? 1,
      used: used.includes(r.id),
      weight: used.includes(r.id) ? 1 / used.length : 0,
      checkpoint: "best",
    }));
    const first = this.require(sorted[0].id);
    const view = this.newView(this.models[0], this.datasets[0], { ...first.view.config, method: "lora" }, now());
    Object.assign(view, {
      kind: "soup",
      status: "completed",
      steps_done: 0,
      total_steps: 0,
      best_eval_loss: loss,
      first_eval_loss: first.view.first_eval_loss,
      last_eval_loss: loss,
      finished_at: now(),
      soup: { recipe: greedy ? "greedy" : "uniform", ingredients, base_eval_loss: first.view.first_eval_loss ?? 2.5 },
    });
    const metrics = emptyMetrics(view);
    pushEval(metrics.eval, 0, loss, 0, 0);
    metrics.checkpoints.push({ step: 0, path: `${view.run_dir}/checkpoints/best`, best: true });
    this.runs.set(view.id, { view, metrics, timer: null, time: 0, tokens: 0, started: true });
    return { run_id: view.id, eval_loss: loss, recipe: view.soup!.recipe, ingredients, base_eval_loss: view.soup!.base_eval_loss, seconds: 0.3 };
  }

  private runDelete(id: string): RunView {
    const r = this.require(id);
    if (r.view.status === "running" || r.view.status === "queued") fail(`run ${id} is ${r.view.status}: stop it before deleting it`);
    this.runs.delete(id);
    return { ...r.view };
  }

  private compare(ids: string[]): Comparison {
    if (ids.length < 2) fail("compare needs at least two runs");
    const runs = ids.map((id) => this.require(id));
    const pairs = (x: (number | null)[], y: (number | null)[]): [number, number][] =>
      x.flatMap((v, i) => (v !== null && y[i] !== null && y[i] !== undefined ? [[v, y[i] as number] as [number, number]] : []));
    return {
      runs: runs.map((r) => ({ ...r.view })),
      curves: runs.map((r) => ({
        train: pairs(r.metrics.train.step, r.metrics.train.loss),
        eval: pairs(r.metrics.eval.step, r.metrics.eval.loss),
        train_by_tokens: pairs(r.metrics.train.tokens, r.metrics.train.loss),
        eval_by_tokens: pairs(r.metrics.eval.tokens, r.metrics.eval.loss),
      })),
    };
  }

  // --- serve ------------------------------------------------------------------------------
  private serving() {
    if (!this.server) fail("no server is running");
    return this.server as { status: ServeStatus; since: number };
  }

  private async serveStart(model: string, adapters: string[], port: number, isPublic: boolean, apiKey: string | null): Promise<ServeStatus> {
    if (this.server) fail(`a server is already running at ${this.server.status.url}; stop it first`);
    const m = this.requireModel(model);
    if (port !== 0 && port < 1024) fail(`cannot listen on 127.0.0.1:${port}: permission denied`);
    await sleep(150);
    const now = Math.floor(Date.now() / 1000);
    this.server = {
      since: Date.now(),
      status: {
        url: `http://${isPublic ? "192.168.1.20" : "127.0.0.1"}:${port || 41234}/v1`,
        base: model,
        models: [{ id: model, kind: "base", source: m.path, load_s: 1.8, created: now }],
        stats: {
          requests: 0, failed: 0, cancelled: 0, queued: 0, active: null, prompt_tokens: 0, completion_tokens: 0,
          decode_s: 0, busy_s: 0, last_tokens_per_s: 0, last_model: null,
        },
        uptime_s: 0,
        context_tokens: 8192,
        api_key_required: !!apiKey,
        resident_bytes: 612 * 1024 * 1024,
      },
    };
    for (const a of adapters) await this.serveAdd(a, a);
    return this.serveSnapshot();
  }

  private async serveAdd(name: string, source: string): Promise<ServeStatus> {
    const s = this.serving();
    if (s.status.models.some((m) => m.id === name)) fail(`a model named \`${name}\` is already served; remove it first`);
    const r = this.require(source);
    if (!["completed", "paused", "cancelled"].includes(r.view.status)) fail(`run ${source} has no checkpoint yet`);
    await sleep(40);
    s.status.models.push({ id: name, kind: "adapter", source, load_s: 0.012, created: Math.floor(Date.now() / 1000) });
    s.status.resident_bytes += 3 * 1024 * 1024;
    return this.serveSnapshot();
  }

  private serveSnapshot(): ServeStatus {
    const s = this.serving();
    const up = (Date.now() - s.since) / 1000;
    const requests = Math.floor(up * 2);
    const names = s.status.models.map((m) => m.id);
    s.status.uptime_s = up;
    s.status.stats = {
      ...s.status.stats,
      requests,
      prompt_tokens: requests * 31,
      completion_tokens: requests * 24,
      decode_s: requests * 0.8,
      busy_s: requests * 0.9,
      last_tokens_per_s: requests ? 30 : 0,
      last_model: requests ? names[requests % names.length] : null,
    };
    return JSON.parse(JSON.stringify(s.status)) as ServeStatus;
  }

  // --- playground -------------------------------------------------------------------------
  private async chat(model: string, adaptersRaw: unknown, prompt: string, maxTokens: number, temperature: number): Promise<ChatAnswer[]> {
    this.requireModel(model);
    if (!Array.isArray(adaptersRaw) || adaptersRaw.some((x) => x !== null && typeof x !== "string"))
      fail("mock backend: argument `adapters` must be a list of run ids or null");
    const adapters = adaptersRaw as (string | null)[];
    if (!prompt.trim()) fail("the prompt is empty");
    if (maxTokens < 1) fail("max tokens must be at least 1");
    if (temperature < 0) fail("temperature must be 0 or more");
    for (const a of adapters) {
      if (a === null) continue;
      const r = this.require(a);
      if (!["completed", "paused", "cancelled"].includes(r.view.status)) fail(`run ${a} has no checkpoint yet (it is ${r.view.status})`);
      if (r.view.model !== model) fail(`run ${a} was trained on ${r.view.model}, not ${model}`);
    }
    await sleep(250);
    const name = /([A-Z][a-z]+ [A-Z][a-z]+)/.exec(prompt)?.[1] ?? "Ada Lovelace";
    const age = /\b(\d{1,3})\b/.exec(prompt)?.[1] ?? "36";
    const city = /(?:in|to|of) ([A-Z][a-z]+)/.exec(prompt)?.[1] ?? "London";
    return adapters.map((a, i) => {
      const text =
        a === null
          ? `Sure! Here is what I found in your text: the person is ${name}, who is ${age} years old. They seem to live in ${city}, but I am not completely sure. Let me know if you need anything else!`
          : i === 1
            ? `{"name": "${name}", "age": ${age}, "city": "${city}"}`
            : `{"name": "${name}", "age": ${age}, "city": "${city}"}\n`;
      const tokens = Math.min(maxTokens, Math.max(4, Math.round(text.split(/\s+/).length * 1.4)));
      const seconds = tokens / (a === null ? 41.5 : 38.2) + 0.05;
      return { adapter: a, text, tokens, seconds, tokens_per_s: tokens / seconds, switch_s: a === null ? 0 : 0.12 };
    });
  }

  // --- export -----------------------------------------------------------------------------
  private async exportRun(runId: string, formatRaw: string, dtype?: string): Promise<ExportReport> {
    const r = this.require(runId);
    if (!["peft", "merged", "gguf", "ollama"].includes(formatRaw)) fail(`--format: \`${formatRaw}\` is not one of peft, merged, gguf, ollama`);
    const format = formatRaw as ExportFormat;
    const method = r.view.method as MethodKind;
    // the engine's own answer for this method and format (engine-facts.json)
    const refusal = methodFacts(method).export_refusals[format];
    if (refusal) fail(refusal);
    const ggufAdapter = methodFacts(method).gguf_adapter;
    if (dtype) {
      if (format === "peft") fail("--dtype: a PEFT export keeps the checkpoint's tensors as they are; leave --dtype out");
      if (format === "merged" && !["f32", "f16", "bf16"].includes(dtype)) fail(`--dtype: \`${dtype}\` is not one of f32, f16, bf16 for a merged model`);
      if ((format === "gguf" || format === "ollama") && !["f32", "f16", "q8_0"].includes(dtype)) fail(`--dtype: \`${dtype}\` is not one of f32, f16, q8_0 for a GGUF file`);
    }
    if (!["completed", "paused", "cancelled"].includes(r.view.status)) fail(`run ${runId} has no checkpoint to export yet (it is ${r.view.status})`);
    const stage = async (s: string) => {
      const u: ExportUpdate = { run_id: runId, format, stage: s };
      void emit("export", u);
      await sleep(180);
    };
    const started = performance.now();
    await stage("reading the base model");
    await stage("hashing the base model");
    const path = `${DATA_DIR}/exports/${runId}-${format}`;
    const trainable = r.view.trainable_params ?? trainableParams(r.view.config);
    const manifest = { name: "manifest.json", bytes: 2_311, sha256: "0c4d…" };
    const sha = (n: number) => n.toString(16).padStart(8, "0").repeat(8);
    const wholeBytes = (d: string) => Math.round(SMOL.params * (d === "f32" ? 4 : d === "q8_0" ? 1.0625 : 2)) + 7_340_032;
    let kind: string;
    let files: { name: string; bytes: number; sha256: string }[];
    let next: string | null = null;
    switch (format) {
      case "peft":
        await stage("writing the PEFT adapter");
        kind = "peft_adapter";
        files = [
          { name: "adapter_config.json", bytes: 812, sha256: sha(1) },
          { name: "adapter_model.safetensors", bytes: trainable * 4 + 2_144, sha256: sha(2) },
          { name: "README.md", bytes: 1_904, sha256: sha(3) },
        ];
        break;
      case "merged": {
        const d = dtype ?? "f16";
        await stage("loading the base model with the adapter");
        await stage(`merging the adapter into the weights (${SMOL.layers} layers)`);
        await stage("writing model.safetensors");
        kind = "merged_model";
        files = [
          { name: "config.json", bytes: 733, sha256: sha(4) },
          { name: "generation_config.json", bytes: 132, sha256: sha(5) },
          { name: "model.safetensors", bytes: Math.round(SMOL.params * (d === "f32" ? 4 : 2)) + 24_576, sha256: sha(6) },
          { name: "special_tokens_map.json", bytes: 655, sha256: sha(7) },
          { name: "tokenizer.json", bytes: 2_104_556, sha256: sha(8) },
          { name: "tokenizer_config.json", bytes: 3_764, sha256: sha(9) },
        ];
        break;
      }
      case "gguf":
        if (ggufAdapter) {
          await stage("writing the GGUF adapter");
          kind = "gguf_adapter";
          files = [{ name: "adapter.gguf", bytes: trainable * (dtype === "f32" || !dtype ? 4 : dtype === "q8_0" ? 1.0625 : 2) + 9_216, sha256: sha(10) }];
        } else {
          await stage("loading the base model with the adapter");
          await stage("writing model.gguf");
          kind = "gguf_model";
          files = [{ name: "model.gguf", bytes: wholeBytes(dtype ?? "f16"), sha256: sha(11) }];
        }
        break;
      case "ollama": {
        const name = slug(`SmolLM2-135M-Instruct-${runId}`);
        next = `ollama create ${name} -f ${path}/Modelfile`;
        if (ggufAdapter) {
          await stage("writing the GGUF adapter");
          kind = "ollama_adapter";
          files = [{ name: "adapter.gguf", bytes: trainable * 4 + 9_216, sha256: sha(12) }];
        } else {
          await stage("writing model.gguf");
          kind = "ollama_model";
          files = [{ name: "model.gguf", bytes: wholeBytes(dtype ?? "f16"), sha256: sha(13) }];
        }
        files.push({ name: "Modelfile", bytes: 402, sha256: sha(14) }, { name: "README.md", bytes: 611, sha256: sha(15) });
        break;
      }
    }
    files.push(manifest);
    return {
      run_id: runId,
      format,
      kind,
      path,
      checkpoint: "best",
      files,
      seconds: (performance.now() - started) / 1000,
      next_step: next,
    };
  }
}
