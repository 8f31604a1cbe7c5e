// Test data for the wizard's tests: SmolLM2-135M (134,515,008 parameters; 30 layers,
// hidden 576, k/v width 192, MLP 1536) on a 24 GiB CPU, the shipped extraction sample.
import type {
  DatasetRecord,
  EstimateReport,
  Inspection,
  MethodKind,
  MethodRow,
  ModelRecord,
  SettingSpec,
} from "../../lib/ipc";
import type { TrainConfig } from "../../lib/bindings/TrainConfig";
import { FACTS, methodFacts } from "../../../tests/mock/engine-facts";

/** Llama's decoder linears, in `LORA_TARGETS` order. */
export const ALL_LINEAR_NAMES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

export const GiB = 2 ** 30;
export const MiB = 2 ** 20;
export const SMOL_PARAMS = 134_515_008;

export const SMOL: ModelRecord = {
  id: "smollm2-135m-instruct-q4-1",
  name: "SmolLM2 135M Instruct",
  source: "gguf",
  reference: "/data/models/SmolLM2-135M-Instruct.Q4_1.gguf",
  path: "/data/models/SmolLM2-135M-Instruct.Q4_1.gguf",
  architecture: "llama",
  parameter_count: SMOL_PARAMS,
  size_bytes: 98_362_432,
  sha256: "b179d5e1",
  created_at: "2025-05-02T08:55:10.412Z",
};

export const QWEN: ModelRecord = {
  ...SMOL,
  id: "qwen2-5-0-5b-instruct",
  name: "Qwen2.5 0.5B Instruct",
  source: "hub",
  reference: "hf:Qwen/Qwen2.5-0.5B-Instruct",
  path: "/data/models/Qwen2.5-0.5B-Instruct",
  architecture: "qwen2",
  parameter_count: 494_032_768,
  size_bytes: 988_097_824,
};

export const SAMPLE: DatasetRecord = {
  id: "whetstone-demo-extract",
  name: "whetstone-demo-extract",
  original_path: "/data/datasets/whetstone-demo-extract.jsonl",
  path: "/data/datasets/whetstone-demo-extract.jsonl",
  format: "alpaca",
  columns: null,
  records: 300,
  dropped: 0,
  problems: "[]",
  size_bytes: 61_843,
  sha256: "9c0e5b1f",
  created_at: "2025-05-02T09:01:44.930Z",
};

type Cols = [name: string, arch: string, latency: string, compute: string, use: string, difficulty: string];
const COLS = Object.fromEntries(FACTS.methods.map((m) => [m.id, m.columns])) as Record<MethodKind, Cols>;

/** Trainable parameters on SmolLM2-135M at each method's defaults, as the engine counts them
 * for the table. */
export const TRAINABLE = Object.fromEntries(FACTS.methods.map((m) => [m.id, m.table_trainable])) as Record<MethodKind, number>;

/** Memory per method the component tests are written around (small, so every row fits and
 * QLoRA sorts first); a method not listed takes the engine's own estimate (CPU, f32), scaled
 * as LoRA's is here. */
export const MEMORY: Partial<Record<MethodKind, number>> = {
  full: 2.9 * GiB,
  freeze: 1.3 * GiB,
  lora: 1.2 * GiB,
  qlora: 0.7 * GiB,
  dora: 1.25 * GiB,
  lora_plus: 1.2 * GiB,
  ia3: 1.1 * GiB,
  bitfit: 1.12 * GiB,
  prompt_tuning: 1.05 * GiB,
  prefix_tuning: 1.15 * GiB,
  p_tuning_v2: 1.1 * GiB,
  adapter: 1.22 * GiB,
};

export const METHOD_IDS = Object.keys(COLS) as MethodKind[];

export function methodRows(opts: { usable?: number; memory?: Partial<Record<MethodKind, number>>; recommended?: MethodKind } = {}): MethodRow[] {
  const usable = opts.usable ?? 21.6 * GiB;
  const rec = opts.recommended ?? "lora";
  return METHOD_IDS.map((id) => {
    const [name, arch, latency, compute, use, difficulty] = COLS[id];
    const scale = MEMORY.lora! / methodFacts("lora").table_memory_cpu;
    const bytes = Math.round(opts.memory?.[id] ?? MEMORY[id] ?? methodFacts(id).table_memory_cpu * scale);
    const trainable = TRAINABLE[id];
    const pct = (100 * trainable) / SMOL_PARAMS;
    return {
      id,
      name,
      trainable_params: trainable,
      trainable_percent: pct,
      est_memory_bytes: bytes,
      fits_device: bytes <= usable,
      changes_architecture: arch,
      inference_latency: latency,
      compute,
      use_case: use,
      difficulty,
      phrases: methodFacts(id).phrases,
      applicable: id !== "bitfit",
      recommended: id === rec,
      notes:
        id === "bitfit"
          ? "this llama model has no biases: BitFit applies only with bitfit.add_biases=true (zero-initialised biases are added and trained)"
          : "",
      estimate: {
        method: id,
        compute_dtype: "f32",
        trainable_params: trainable,
        base_params: SMOL_PARAMS,
        trainable_percent: pct,
        weight_bytes: SMOL_PARAMS * 4,
        optimizer_bytes: trainable * 16,
        activation_bytes: Math.max(0, bytes - SMOL_PARAMS * 4 - trainable * 16 - 200 * MiB),
        runtime_bytes: 200 * MiB,
        total_bytes: bytes,
      },
    };
  });
}

/** The run config `TrainConfig::for_method` gives (QLoRA: r 16 / alpha 32 on every linear),
 * with `over` on top; the Playwright mock backend uses it too. */
export function trainConfig(method: MethodKind, over: Partial<TrainConfig> = {}): TrainConfig {
  return { ...structuredClone(methodFacts(method).config), ...over };
}

export function estimateReport(method: MethodKind = "lora", over: Partial<EstimateReport> = {}): EstimateReport {
  const row = methodRows().find((r) => r.id === method);
  if (!row) throw new Error(method);
  return {
    ...row.estimate,
    est_memory_bytes: row.est_memory_bytes,
    fits_device: true,
    device: "cpu:0",
    device_name: "AMD Ryzen 7 5800U",
    usable_bytes: Math.floor((24 * GiB) / 10) * 9,
    config: trainConfig(method),
    ...over,
  };
}

/** `cfg` with the top-level numeric and boolean pairs of `sets` applied (as the backend would). */
export function withSets(cfg: TrainConfig, sets: readonly string[]): TrainConfig {
  const out: Record<string, unknown> = { ...cfg };
  for (const p of sets) {
    const [k, v] = p.split("=");
    if (!(k in out) || k.includes(".")) continue;
    out[k] = v === "none" ? null : v === "true" ? true : v === "false" ? false : Number.isFinite(Number(v)) ? Number(v) : v;
  }
  return out as TrainConfig;
}

type K = SettingSpec["kind"];
const KEYS: [string, string, K, string, string, string[]?][] = [
  ["max_steps", "Training", "integer", "none", "Stop after this many optimizer steps (none: train for `epochs`)."],
  ["epochs", "Training", "number", "1", "Passes over the training split."],
  ["batch_size", "Training", "integer", "4", "Examples per micro-batch."],
  ["lr", "Training", "number", "none", "Peak learning rate (none: the method's default)."],
  ["schedule", "Training", "choice", "cosine", "How the learning rate decays after warm-up.", ["cosine", "linear", "constant"]],
  ["seq_len", "Data", "integer", "512", "Tokens per training row; longer examples are refused unless `truncate` is on."],
  ["packing", "Data", "bool", "false", "Concatenate examples into full rows instead of padding each one."],
  ["eval_fraction", "Data", "number", "0.1", "Share of the records held out for evaluation."],
  ["eval_every", "Evaluation", "integer", "50", "Evaluate every N steps (0 = only before and after training)."],
  ["save_every", "Evaluation", "integer", "50", "Checkpoint every N steps (0 = only at the end)."],
  ["gradient_checkpointing", "Device", "bool", "false", "Recompute activations in the backward pass: less memory, about a third slower."],
  ["device", "Device", "text", "cpu", "cpu, cuda, cuda:N or metal."],
  ["lora.r", "Method", "integer", "8", "LoRA rank: width of the low-rank update."],
  ["lora.targets", "Method", "text", "q_proj,k_proj,v_proj,o_proj", "Linear modules that get LoRA (comma list of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; Phi-3's fused qkv_proj, gate_up_proj; or all-linear)."],
  ["ia3.targets", "Method", "text", "k_proj,v_proj,down_proj", "(IA)3: modules whose activations are rescaled (attention outputs, MLP inputs)."],
  ["adapter.bottleneck", "Method", "integer", "none", "Houlsby adapters: width of the bottleneck (none: 64, or half the hidden size where that is smaller)."],
];

/** The settings schema for a LoRA-family method with `sets` applied. */
export function schema(sets: string[] = []): SettingSpec[] {
  return KEYS.map(([key, group, kind, def, help, choices]) => {
    const pair = [...sets].reverse().find((p) => p.startsWith(`${key}=`));
    return {
      key,
      value: pair ? pair.slice(key.length + 1) : def,
      default: def,
      help,
      group,
      kind,
      choices: choices ?? [],
      applies: !key.startsWith("ia3.") && !key.startsWith("adapter."),
    };
  });
}

export const CHATML =
  "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n" +
  "<|im_start|>user\nExtract the person's name, age and city as JSON.\n\nMei Nilsson, 69, lives in Cluj and works as a nurse.<|im_end|>\n" +
  '<|im_start|>assistant\n⟦{"name": "Mei Nilsson", "age": 69, "city": "Cluj"}<|im_end|>⟧\n';

export function inspection(over: Partial<Inspection> = {}): Inspection {
  return {
    problems: [],
    preview: [{ at: "line 1", rendered: CHATML, rejected: null, desirable: null }],
    stats: {
      records: 300,
      min_tokens: 61,
      mean_tokens: 84.2,
      max_tokens: 171,
      over_seq_len: 0,
      seq_len: 512,
      bin: 32,
      histogram: [0, 12, 201, 71, 14, 2],
      trained_tokens: 6_120,
    },
    ...over,
  };
}
