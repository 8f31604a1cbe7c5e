// Test data for the run screens' tests.
import type { RunView } from "../../lib/ipc";
import type { TrainConfig } from "../../lib/bindings/TrainConfig";

/** A run config with the fields the run screens read; the rest as the backend stores it. */
export function config(over: { lr?: number | null; seq_len?: number; r?: number } = {}): TrainConfig {
  return {
    lr: over.lr === undefined ? 0.0002 : over.lr,
    seq_len: over.seq_len ?? 512,
    lora: { r: over.r ?? 16 },
  } as unknown as TrainConfig;
}

export function runView(id: string, over: Partial<RunView> = {}): RunView {
  return {
    id,
    status: "completed",
    method: "lora",
    model: "smollm2-135m",
    dataset: "alpaca-mini",
    config: config(),
    steps_done: 100,
    best_eval_loss: 1.5,
    final_train_loss: 1.4,
    tokens_per_s: 1000,
    peak_mem_bytes: 2 * 2 ** 30,
    created_at: "2025-03-01 10:00:00",
    finished_at: "2025-03-01 10:10:00",
    total_steps: 100,
    first_eval_loss: 2.5,
    last_eval_loss: 1.6,
    trainable_params: 1_000_000,
    total_params: 135_000_000,
    elapsed_s: 600,
    adapter_bytes: 4 * 2 ** 20,
    run_dir: `/data/runs/${id}`,
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
    ...over,
  } as RunView;
}
