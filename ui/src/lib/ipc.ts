// The one typed bridge to the Rust side. Components call `api.*` and `on*`, never `invoke`
// or `listen` directly. Types come from ./bindings, generated from the Rust structs by ts-rs
// (`cargo test` rewrites them; CI fails when the committed copies are stale).
import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";
import type { AppError } from "./bindings/AppError";
import type { ChatAnswer } from "./bindings/ChatAnswer";
import type { Collected } from "./bindings/Collected";
import type { Comparison } from "./bindings/Comparison";
import type { CuratedModel } from "./bindings/CuratedModel";
import type { DatasetRecord } from "./bindings/DatasetRecord";
import type { DoctorReport } from "./bindings/DoctorReport";
import type { DownloadUpdate } from "./bindings/DownloadUpdate";
import type { ErrorKind } from "./bindings/ErrorKind";
import type { EstimateReport } from "./bindings/EstimateReport";
import type { ExportFormat } from "./bindings/ExportFormat";
import type { ExportReport } from "./bindings/ExportReport";
import type { ExportUpdate } from "./bindings/ExportUpdate";
import type { HubModelInfo } from "./bindings/HubModelInfo";
import type { Inspection } from "./bindings/Inspection";
import type { MethodRow } from "./bindings/MethodRow";
import type { ModelRecord } from "./bindings/ModelRecord";
import type { QueueUpdate } from "./bindings/QueueUpdate";
import type { ReportFiles } from "./bindings/ReportFiles";
import type { RunMetrics } from "./bindings/RunMetrics";
import type { RunView } from "./bindings/RunView";
import type { SampleDataset } from "./bindings/SampleDataset";
import type { ServeStatus } from "./bindings/ServeStatus";
import type { SettingSpec } from "./bindings/SettingSpec";
import type { SoupReport } from "./bindings/SoupReport";
import type { PlannedRun } from "./bindings/PlannedRun";
import type { SweepSpec } from "./bindings/SweepSpec";
import type { SweepSummary } from "./bindings/SweepSummary";
import type { SweepView } from "./bindings/SweepView";
import type { TokenStatus } from "./bindings/TokenStatus";

export type {
  ChatAnswer,
  Collected,
  Comparison,
  CuratedModel,
  DatasetRecord,
  DoctorReport,
  DownloadUpdate,
  EstimateReport,
  ExportFormat,
  ExportReport,
  ExportUpdate,
  HubModelInfo,
  Inspection,
  MethodRow,
  ModelRecord,
  QueueUpdate,
  ReportFiles,
  RunMetrics,
  RunView,
  SampleDataset,
  ServeStatus,
  SettingSpec,
  SoupReport,
  PlannedRun,
  SweepSpec,
  SweepSummary,
  SweepView,
  TokenStatus,
};
export type { GridAxis } from "./bindings/GridAxis";
export type { Ingredient } from "./bindings/Ingredient";
export type { SoupRecipe } from "./bindings/SoupRecipe";
export type { DeviceInfo } from "./bindings/DeviceInfo";
export type { DemoModelStatus } from "./bindings/DemoModelStatus";
export type { TrainEvent } from "./bindings/TrainEvent";
export type { MethodKind } from "./bindings/MethodKind";
export type { Curves } from "./bindings/Curves";
export type { PreviewExample } from "./bindings/PreviewExample";
export type { ServedModel } from "./bindings/ServedModel";
export type { Judgement } from "./bindings/Judgement";
export type { LengthStats } from "./bindings/LengthStats";

/** A rejected command: the backend's `{kind, message}` (`whetstone_studio::error::AppError`,
 * where user errors and bugs are told apart). It prints as its message, so `String(e)` and
 * `e.message` both show the text the backend wrote. */
export class BackendError extends Error {
  readonly kind: ErrorKind;
  constructor(kind: ErrorKind, message: string) {
    super(message);
    this.name = "BackendError";
    this.kind = kind;
  }
  override toString(): string {
    return this.message;
  }
}

/** Any rejection as a [`BackendError`]; a bare string (the mocked backend) is the user's. */
export function backendError(e: unknown): BackendError {
  if (e instanceof BackendError) return e;
  if (typeof e === "string") return new BackendError("user", e);
  const shape = e as Partial<AppError> | null;
  if (shape && typeof shape.message === "string" && typeof shape.kind === "string") {
    return new BackendError(shape.kind, shape.message);
  }
  return new BackendError("bug", e instanceof Error ? e.message : String(e));
}

/** `invoke`, with rejections turned into [`BackendError`]s. */
function call<T>(cmd: string, args?: Record<string, unknown>): Promise<T> {
  return invoke<T>(cmd, args).catch((e: unknown) => {
    throw backendError(e);
  });
}

/** Settings as `key=value` pairs, the same keys `whetstone train --set` takes. */
export type SettingPairs = string[];

export const api = {
  /** Versions, devices, data directory, database and demo-model status. */
  doctor: () => call<DoctorReport>("doctor"),

  // --- models ---------------------------------------------------------------------------
  /** Registered models (the demo model is registered on first call when it is present). */
  modelsList: () => call<ModelRecord[]>("models_list"),
  /** Small models worth starting with, with LoRA/QLoRA memory for `device` (default: best). */
  modelsCurated: (device?: string) => call<CuratedModel[]>("models_curated", { device }),
  /** Register an HF folder or `.gguf` file; `copy` copies it into the data directory. */
  modelsAdd: (path: string, copy: boolean) => call<ModelRecord>("models_add", { path, copy }),
  /** What a hub download would fetch (size, licence, gating), before fetching it. */
  hubInfo: (repo: string) => call<HubModelInfo>("hub_info", { repo }),
  /** Download (resuming) and register a hub model; progress arrives by `onDownload`. */
  hubDownload: (repo: string) => call<ModelRecord>("hub_download", { repo }),

  // --- datasets -------------------------------------------------------------------------
  datasetsList: () => call<DatasetRecord[]>("datasets_list"),
  /** The sample datasets that ship with the app. */
  datasetsSamples: () => call<SampleDataset[]>("datasets_samples"),
  /** Register a dataset file; `format` forces one (alpaca, chat, sharegpt, text, csv, preference, kto). */
  datasetsAdd: (path: string, format?: string, columns?: string) =>
    call<DatasetRecord>("datasets_add", { path, format, columns }),
  /** Problems (with line numbers), a preview through the model's chat template (trained spans
   *  wrapped in ⟦ ⟧) and token-length statistics for `model` at `seqLen`. */
  datasetsInspect: (dataset: string, model: string | null, seqLen: number, n: number) =>
    call<Inspection>("datasets_inspect", { dataset, model, seqLen, n }),

  // --- methods and settings -------------------------------------------------------------
  /** The comparison table with live numbers for `model` on `device`. */
  methodsTable: (model: string, device?: string) =>
    call<MethodRow[]>("methods_table", { model, device }),
  /** Every run-config key with its value for `method` after `sets`, its help and group. */
  settingsSchema: (method: string, sets: SettingPairs) =>
    call<SettingSpec[]>("settings_schema", { method, sets }),
  /** Memory estimate and fit; rejects with the offending key when a setting is invalid. */
  estimate: (model: string, method: string, sets: SettingPairs, device?: string) =>
    call<EstimateReport>("estimate", { model, method, sets, device }),

  // --- runs -----------------------------------------------------------------------------
  /** Validate and register a run, then queue it. */
  runStart: (model: string, dataset: string, method: string, sets: SettingPairs) =>
    call<RunView>("run_start", { model, dataset, method, sets }),
  /** Queue a paused or stopped run again from its last checkpoint. */
  runResume: (id: string) => call<RunView>("run_resume", { id }),
  runControl: (id: string, action: "pause" | "stop") =>
    call<RunView>("run_control", { id, action }),
  runsList: () => call<RunView[]>("runs_list"),
  runShow: (id: string) => call<RunView>("run_show", { id }),
  /** Every recorded metric of a run as columns (uPlot's layout), samples and logs. */
  runMetrics: (id: string) => call<RunMetrics>("run_metrics", { id }),
  runDelete: (id: string) => call<RunView>("run_delete", { id }),
  runTag: (id: string, tags: string[], add: boolean) =>
    call<RunView>("run_tag", { id, tags, add }),
  runNote: (id: string, text: string) => call<RunView>("run_note", { id, text }),
  /** Two or more runs with their curves. */
  runsCompare: (ids: string[]) => call<Comparison>("runs_compare", { ids }),
  /** Markdown report with charts (PNG, SVG) of the runs, written under the data directory. */
  runsReport: (ids: string[], by: "step" | "tokens") =>
    call<ReportFiles>("runs_report", { ids, by }),
  // --- sweeps and soups -----------------------------------------------------------------
  /** The runs a sweep would make (each validated; a bad key or value rejects by name). */
  sweepPlan: (spec: SweepSpec) => call<PlannedRun[]>("sweep_plan", { spec }),
  /** Register a sweep and queue its runs. */
  sweepStart: (spec: SweepSpec) => call<SweepView>("sweep_start", { spec }),
  sweepsList: () => call<SweepSummary[]>("sweeps_list"),
  sweepShow: (id: string) => call<SweepView>("sweep_show", { id }),
  /** Average finished runs into a new `soup` run: uniform, or greedy by eval loss. */
  soupMake: (runs: string[], greedy: boolean) => call<SoupReport>("soup_make", { runs, greedy }),
  /** Ids of the runs training or waiting, per device. */
  queuePositions: () => call<[string, string[]][]>("queue_positions"),

  // --- playground and export ------------------------------------------------------------
  /** The same prompt answered by the base (`null`) and by each run's adapter, in order. */
  chat: (model: string, adapters: (string | null)[], prompt: string, maxTokens: number, temperature: number) =>
    call<ChatAnswer[]>("chat", { model, adapters, prompt, maxTokens, temperature }),
  /** Keep a Playground judgement: appended to the library's `playground-pairs` (preferred
   * answer) or `playground-ratings` (thumbs) dataset, which this returns as it is now. */
  preferenceRecord: (collected: Collected) => call<DatasetRecord>("preference_record", { collected }),
  /** Export a run; stages arrive by `onExport`. */
  exportRun: (run: string, format: ExportFormat, dtype?: string) =>
    call<ExportReport>("export_run", { run, format, dtype }),

  // --- serve ----------------------------------------------------------------------------
  /** Start the OpenAI-compatible server: `model` with the runs' adapters (named by run id);
   * `public` listens on every interface instead of 127.0.0.1. */
  serveStart: (model: string, adapters: string[], port: number, isPublic: boolean, apiKey: string | null) =>
    call<ServeStatus>("serve_start", { model, adapters, port, public: isPublic, apiKey }),
  /** The running server's state and live counters; `null` when none runs. */
  serveStatus: () => call<ServeStatus | null>("serve_status"),
  serveStop: () => call<null>("serve_stop"),
  serveAddAdapter: (name: string, source: string) => call<ServeStatus>("serve_add_adapter", { name, source }),
  serveRemoveAdapter: (name: string) => call<ServeStatus>("serve_remove_adapter", { name }),

  // --- settings -------------------------------------------------------------------------
  tokenStatus: () => call<TokenStatus>("token_status"),
  /** Store the Hugging Face token in the OS keychain (never on disk in plain text). */
  tokenSet: (token: string) => call<TokenStatus>("token_set", { token }),
  tokenRemove: () => call<TokenStatus>("token_remove"),
};

/** Queue updates for every run: placed, batched training events (≤ 20/s per run), ended. */
export function onQueue(handler: (u: QueueUpdate) => void): Promise<UnlistenFn> {
  return listen<QueueUpdate>("queue", (e) => handler(e.payload));
}

export function onDownload(handler: (u: DownloadUpdate) => void): Promise<UnlistenFn> {
  return listen<DownloadUpdate>("download", (e) => handler(e.payload));
}

export function onExport(handler: (u: ExportUpdate) => void): Promise<UnlistenFn> {
  return listen<ExportUpdate>("export", (e) => handler(e.payload));
}

/** Open a file manager at `path` (the opener plugin; allowed for exported folders only). */
export async function reveal(path: string): Promise<void> {
  const { revealItemInDir } = await import("@tauri-apps/plugin-opener");
  await revealItemInDir(path);
}

/** A native file picker; `null` when the user cancels. */
export async function pickPath(opts: { directory: boolean; filters?: { name: string; extensions: string[] }[] }): Promise<string | null> {
  const { open } = await import("@tauri-apps/plugin-dialog");
  const picked = await open({ directory: opts.directory, multiple: false, filters: opts.filters });
  return typeof picked === "string" ? picked : null;
}
