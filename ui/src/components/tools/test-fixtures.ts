// Builders for the component tests of home, playground, export and settings.
import type { DoctorReport, ModelRecord, RunView } from "../../lib/ipc";

export function model(overrides: Partial<ModelRecord> = {}): ModelRecord {
  return {
    id: "smollm2-135m-instruct-q4-1",
    name: "SmolLM2 135M Instruct",
    source: "gguf",
    reference: "/d/models/SmolLM2-135M-Instruct.Q4_1.gguf",
    path: "/d/models/SmolLM2-135M-Instruct.Q4_1.gguf",
    architecture: "llama",
    parameter_count: 134_515_008,
    size_bytes: 98_362_432,
    sha256: null,
    created_at: "2025-05-02T08:55:10Z",
    ...overrides,
  };
}

export function run(overrides: Partial<RunView> = {}): RunView {
  const id = overrides.id ?? "run-1";
  return {
    id,
    status: "completed",
    method: "lora",
    model: "smollm2-135m-instruct-q4-1",
    dataset: "whetstone-demo-extract",
    config: {} as RunView["config"],
    steps_done: 100,
    best_eval_loss: 0.4123,
    final_train_loss: 0.39,
    tokens_per_s: 402.7,
    peak_mem_bytes: 1_702_887_424,
    created_at: "2025-05-02T09:14:03Z",
    finished_at: "2025-05-02T09:16:02Z",
    total_steps: 100,
    first_eval_loss: 2.5,
    last_eval_loss: 0.42,
    trainable_params: 921_600,
    total_params: 134_515_008,
    elapsed_s: 71.2,
    adapter_bytes: 3_688_240,
    run_dir: `/d/runs/${id}`,
    error: null,
    tags: [],
    notes: null,
    dataset_sha256: null,
    app_version: "0.1.0",
    kind: "train",
    sweep_id: null,
    settings: null,
    soup: null,
    task_metrics: [],
    ...overrides,
  };
}

export function doctor(overrides: Partial<DoctorReport> = {}): DoctorReport {
  return {
    version: "0.1.0",
    os: "linux",
    arch: "x86_64",
    compiled_features: [],
    libraries: [{ name: "candle-core", version: "0.9.1" }],
    devices: [
      { kind: "cpu", ordinal: 0, name: "Test CPU", available: true, threads: 8, memory_bytes: 16 * 2 ** 30, features: ["avx2"], bf16: false, note: null },
      { kind: "cuda", ordinal: 0, name: "CUDA", available: false, threads: null, memory_bytes: null, features: [], bf16: false, note: "no CUDA in this build" },
    ],
    data_dir: "/d",
    data_dir_error: null,
    database: { path: "/d/whetstone.db", ok: true, journal_mode: "wal", schema_version: 7, models_registered: 1, error: null },
    demo_model: {
      file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
      path: "/d/models/SmolLM2-135M-Instruct.Q4_1.gguf",
      present: true,
      size_bytes: 98_362_432,
      expected_sha256: "b179",
      sha256_ok: true,
      architecture: "llama",
      tensor_count: 272,
      vocab_size: 49152,
      problem: null,
    },
    ...overrides,
  };
}

/** A promise with its resolve/reject exposed. */
export function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
