// Realistic fixtures for the mocked backend: SmolLM2-135M-Instruct (GGUF) on an 8-thread
// CPU with 16 GiB, the shipped extraction sample (300 alpaca records), two finished runs.
import type {
  CuratedModel,
  DatasetRecord,
  DoctorReport,
  MethodKind,
  ModelRecord,
  SampleDataset,
  SettingSpec,
} from "../../src/lib/ipc";
import { trainConfig } from "../../src/components/wizard/fixtures";
import type { TrainConfig } from "../../src/lib/bindings/TrainConfig";

export const DATA_DIR = "/home/ada/.local/share/whetstone";
export const GiB = 2 ** 30;
export const MiB = 2 ** 20;

// --- the model --------------------------------------------------------------------------
export const SMOL = {
  vocab: 49152,
  hidden: 576,
  intermediate: 1536,
  layers: 30,
  heads: 9,
  kvHeads: 3,
  headDim: 64,
  params: 134_515_008,
};
const KV = SMOL.kvHeads * SMOL.headDim; // 192

export const SMOL_MODEL: ModelRecord = {
  id: "smollm2-135m-instruct-q4-1",
  name: "SmolLM2 135M Instruct",
  source: "gguf",
  reference: `${DATA_DIR}/models/SmolLM2-135M-Instruct.Q4_1.gguf`,
  path: `${DATA_DIR}/models/SmolLM2-135M-Instruct.Q4_1.gguf`,
  architecture: "llama",
  parameter_count: SMOL.params,
  size_bytes: 98_362_432,
  sha256: "b179d5e1f3c2a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4",
  created_at: "2025-05-02T08:55:10.412Z",
};

export function doctorReport(): DoctorReport {
  return {
    version: "0.1.0",
    os: "linux",
    arch: "x86_64",
    compiled_features: [],
    libraries: [
      { name: "candle-core", version: "0.9.1" },
      { name: "tokenizers", version: "0.21.1" },
      { name: "sqlx", version: "0.8.6" },
      { name: "tauri", version: "2.5.1" },
    ],
    devices: [
      {
        kind: "cpu",
        ordinal: 0,
        name: "AMD Ryzen 7 5800U with Radeon Graphics",
        available: true,
        threads: 8,
        memory_bytes: 16 * GiB,
        features: ["avx2", "fma", "f16c"],
        bf16: false,
        note: null,
      },
      {
        kind: "cuda",
        ordinal: 0,
        name: "CUDA",
        available: false,
        threads: null,
        memory_bytes: null,
        features: [],
        bf16: false,
        note: "this build has no CUDA support (rebuild with `--features cuda`)",
      },
    ],
    data_dir: DATA_DIR,
    data_dir_error: null,
    database: {
      path: `${DATA_DIR}/whetstone.db`,
      ok: true,
      journal_mode: "wal",
      schema_version: 7,
      models_registered: 1,
      error: null,
    },
    demo_model: {
      file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
      path: SMOL_MODEL.path,
      present: true,
      size_bytes: 98_362_432,
      expected_sha256: SMOL_MODEL.sha256 ?? "",
      sha256_ok: true,
      architecture: "llama",
      tensor_count: 272,
      vocab_size: SMOL.vocab,
      problem: null,
    },
  };
}

// --- curated models ---------------------------------------------------------------------
type Shape = [vocab: number, hidden: number, inter: number, layers: number, heads: number, kv: number, headDim: number, tied: boolean];
const CURATED: [string, string, string, boolean, string, string, Shape][] = [
  ["HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2 135M Instruct", "apache-2.0", false, "the demo model: minutes per run on a CPU", "llama", [49152, 576, 1536, 30, 9, 3, 64, true]],
  ["HuggingFaceTB/SmolLM2-360M-Instruct", "SmolLM2 360M Instruct", "apache-2.0", false, "small and quick; fine on a CPU", "llama", [49152, 960, 2560, 32, 15, 5, 64, true]],
  ["Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5 0.5B Instruct", "apache-2.0", false, "multilingual, large vocabulary", "qwen2", [151936, 896, 4864, 24, 14, 2, 64, true]],
  ["TinyLlama/TinyLlama-1.1B-Chat-v1.0", "TinyLlama 1.1B Chat", "apache-2.0", false, "Llama 2 layout, SentencePiece tokenizer", "llama", [32000, 2048, 5632, 22, 32, 4, 64, false]],
  ["meta-llama/Llama-3.2-1B-Instruct", "Llama 3.2 1B Instruct", "llama3.2", true, "gated: accept Meta's licence on the hub, then `whetstone hub login`", "llama", [128256, 2048, 8192, 16, 32, 8, 64, true]],
  ["Qwen/Qwen2.5-1.5B-Instruct", "Qwen2.5 1.5B Instruct", "apache-2.0", false, "strongest of the list; QLoRA on 6-8 GB GPUs", "qwen2", [151936, 1536, 8960, 28, 12, 2, 128, true]],
  ["HuggingFaceTB/SmolLM2-1.7B-Instruct", "SmolLM2 1.7B Instruct", "apache-2.0", false, "full multi-head attention: more activation memory", "llama", [49152, 2048, 8192, 24, 32, 32, 64, true]],
];

export function shapeParams([vocab, h, inter, layers, heads, kv, hd, tied]: Shape): number {
  const q = h * heads * hd;
  const kvw = h * kv * hd;
  const attn = q * 2 + kvw * 2;
  const mlp = 3 * h * inter;
  return vocab * h * (tied ? 1 : 2) + layers * (attn + mlp + 2 * h) + h;
}

export function curatedModels(usable: number): CuratedModel[] {
  return CURATED.map(([id, name, license, gated, note, family, shape]) => {
    const p = shapeParams(shape);
    const lora = Math.round(p * 4 * 1.0 + 700 * MiB);
    const qlora = Math.round(p * 0.6 + 900 * MiB);
    return {
      reference: `hf:${id}`,
      name,
      family,
      parameters: p,
      download_bytes: p * 2,
      license,
      gated,
      note,
      lora_bytes: lora,
      qlora_bytes: qlora,
      lora_fits: lora <= usable,
      qlora_fits: qlora <= usable,
    };
  });
}

export function hubFiles(repo: string): { path: string; size: number; sha256: string | null }[] {
  const entry = CURATED.find(([id]) => id === repo);
  const p = entry ? shapeParams(entry[6]) : 494_032_768;
  return [
    { path: "config.json", size: 861, sha256: null },
    { path: "generation_config.json", size: 132, sha256: null },
    { path: "model.safetensors", size: p * 2, sha256: "4f1c7e0b2a9d8c6e5f3a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e" },
    { path: "tokenizer.json", size: 2_104_556, sha256: null },
    { path: "tokenizer_config.json", size: 3_764, sha256: null },
    { path: "special_tokens_map.json", size: 655, sha256: null },
  ];
}

export const CURATED_IDS = CURATED.map(([id, , , gated]) => ({ id, gated }));

// --- datasets ---------------------------------------------------------------------------
export const SAMPLE_PATH = `${DATA_DIR}/datasets/whetstone-demo-extract.jsonl`;

export function samples(): SampleDataset[] {
  return [
    {
      name: "whetstone-demo-extract",
      path: SAMPLE_PATH,
      description: "Extract a person's name, age and city from a sentence as JSON (alpaca format, 300 records)",
      records: 300,
    },
  ];
}

export const SAMPLE_DATASET: DatasetRecord = {
  id: "whetstone-demo-extract",
  name: "whetstone-demo-extract",
  original_path: SAMPLE_PATH,
  path: SAMPLE_PATH,
  format: "alpaca",
  columns: null,
  records: 300,
  dropped: 0,
  problems: "[]",
  size_bytes: 61_843,
  sha256: "9c0e5b1f7a2d4c6e8b0a1f3d5c7e9b2a4d6f8e0c1b3a5d7f9e2c4b6a8d0f1e3c",
  created_at: "2025-05-02T09:01:44.930Z",
};

/** The first records of the shipped sample: [input, output]. */
export const EXTRACT_RECORDS: [string, string][] = [
  ["Mei Nilsson, 69, lives in Cluj and works as a nurse.", '{"name": "Mei Nilsson", "age": 69, "city": "Cluj"}'],
  ["After twenty years abroad, Aiko Volkova, 31, returned home to Haifa.", '{"name": "Aiko Volkova", "age": 31, "city": "Haifa"}'],
  ["Born and raised in Prague, Tomas Aziz is now 46 years old.", '{"name": "Tomas Aziz", "age": 46, "city": "Prague"}'],
  ["Born and raised in Kazan, Kofi Moreau is now 27 years old.", '{"name": "Kofi Moreau", "age": 27, "city": "Kazan"}'],
  ["Born and raised in Hamburg, Tariq Boateng is now 26 years old.", '{"name": "Tariq Boateng", "age": 26, "city": "Hamburg"}'],
  ["After twenty years abroad, Chloe Qureshi, 26, returned home to Hamburg.", '{"name": "Chloe Qureshi", "age": 26, "city": "Hamburg"}'],
  ["Meet Bruno Berg: 47 years old, cyclist, resident of Prague.", '{"name": "Bruno Berg", "age": 47, "city": "Prague"}'],
  ["Meet Priya Ali: 72 years old, cyclist, resident of Malmo.", '{"name": "Priya Ali", "age": 72, "city": "Malmo"}'],
];
export const EXTRACT_INSTRUCTION = "Extract the person's name, age and city as JSON.";

export function renderChatML(input: string, output: string): string {
  return (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n" +
    `<|im_start|>user\n${EXTRACT_INSTRUCTION}\n\n${input}<|im_end|>\n` +
    `<|im_start|>assistant\n⟦${output}<|im_end|>⟧\n`
  );
}

// --- methods ----------------------------------------------------------------------------
export const METHOD_IDS: MethodKind[] = [
  "full",
  "freeze",
  "lora",
  "qlora",
  "dora",
  "lora_plus",
  "ia3",
  "bitfit",
  "prompt_tuning",
  "prefix_tuning",
  "p_tuning_v2",
  "adapter",
];

/** name, changes architecture, inference latency, compute, use case, difficulty */
export const METHOD_COLUMNS: Record<MethodKind, [string, string, string, string, string, string]> = {
  full: ["Full fine-tuning", "no", "none", "very high", "plenty of hardware, maximum quality", "medium"],
  freeze: ["Freeze (last layers)", "no", "none", "high", "cheap partial update, small data", "low"],
  lora: ["LoRA", "no (mergeable)", "none after merge", "low", "the general default", "low"],
  qlora: ["QLoRA", "no (mergeable)", "none after merge", "very low memory, slower step", "one consumer GPU, big model", "medium"],
  dora: ["DoRA", "no (mergeable)", "none after merge", "low-medium", "better than LoRA at small r", "medium"],
  lora_plus: ["LoRA+", "no", "none", "low", "faster LoRA convergence", "low"],
  ia3: ["(IA)3", "no (mergeable)", "none after merge", "very low", "fewest parameters", "low"],
  bitfit: ["BitFit", "no", "none", "very low", "quick baseline", "very low"],
  prompt_tuning: ["Prompt tuning", "input only", "a few extra tokens", "very low", "large models, many tasks", "medium"],
  prefix_tuning: ["Prefix tuning", "attention only", "a few extra KV", "low", "generation tasks, many tasks", "medium"],
  p_tuning_v2: ["P-Tuning v2", "attention only", "a few extra KV", "low", "generation tasks, many tasks", "medium"],
  adapter: ["Adapter (Houlsby)", "yes (serial layers)", "small added", "low", "modular multi-task", "medium"],
};

const LINEAR_SHAPES: Record<string, [number, number]> = {
  q_proj: [SMOL.hidden, SMOL.hidden],
  k_proj: [SMOL.hidden, KV],
  v_proj: [SMOL.hidden, KV],
  o_proj: [SMOL.hidden, SMOL.hidden],
  gate_proj: [SMOL.hidden, SMOL.intermediate],
  up_proj: [SMOL.hidden, SMOL.intermediate],
  down_proj: [SMOL.intermediate, SMOL.hidden],
};
export const ALL_LINEAR = Object.keys(LINEAR_SHAPES);

/** Trainable parameters of `cfg` on SmolLM2-135M (LoRA r8 on q,k,v,o = 921,600). */
export function trainableParams(cfg: TrainConfig): number {
  const L = SMOL.layers;
  const loraParams = (r: number, targets: string[]) =>
    L * targets.reduce((s, t) => s + (LINEAR_SHAPES[t] ? r * (LINEAR_SHAPES[t][0] + LINEAR_SHAPES[t][1]) : 0), 0);
  switch (cfg.method) {
    case "full":
      return SMOL.params;
    case "freeze": {
      const perLayer = 2 * SMOL.hidden * SMOL.hidden + 2 * SMOL.hidden * KV + 3 * SMOL.hidden * SMOL.intermediate + 2 * SMOL.hidden;
      return cfg.freeze.trainable_layers * perLayer + (cfg.freeze.train_norm ? SMOL.hidden : 0);
    }
    case "lora":
    case "qlora":
    case "lora_plus":
      return loraParams(cfg.lora.r, cfg.lora.targets);
    case "dora":
      return loraParams(cfg.lora.r, cfg.lora.targets) + L * cfg.lora.targets.reduce((s, t) => s + (LINEAR_SHAPES[t]?.[1] ?? 0), 0);
    case "ia3":
      return L * cfg.ia3.targets.reduce((s, t) => s + (t === "down_proj" ? SMOL.intermediate : t === "k_proj" || t === "v_proj" ? KV : SMOL.hidden), 0);
    case "bitfit":
      return L * Object.values(LINEAR_SHAPES).reduce((s, [, o]) => s + o, 0);
    case "prompt_tuning":
      return cfg.prompt.n_virtual_tokens * SMOL.hidden;
    case "prefix_tuning": {
      const hidden = cfg.prefix.encoder_hidden || KV;
      const n = cfg.prompt.n_virtual_tokens;
      return n * SMOL.hidden + SMOL.hidden * hidden + hidden + hidden * (2 * L * KV) + 2 * L * KV;
    }
    case "p_tuning_v2":
      return cfg.prompt.n_virtual_tokens * 2 * L * KV;
    case "adapter": {
      const b = cfg.adapter.bottleneck ?? Math.max(1, Math.min(64, Math.floor(SMOL.hidden / 2)));
      return L * 2 * (SMOL.hidden * b + b + b * SMOL.hidden + SMOL.hidden);
    }
    default:
      throw new Error(`mock backend: no parameter count for method ${String(cfg.method)}`);
  }
}

// --- settings ---------------------------------------------------------------------------
type Kind = SettingSpec["kind"];
export const KEY_INFO: { key: string; group: string; kind: Kind; help: string; choices?: string[] }[] = [
  { key: "max_steps", group: "Training", kind: "integer", help: "Stop after this many optimizer steps (none: train for `epochs`)." },
  { key: "epochs", group: "Training", kind: "number", help: "Passes over the training split." },
  { key: "batch_size", group: "Training", kind: "integer", help: "Examples per micro-batch." },
  { key: "grad_accum", group: "Training", kind: "integer", help: "Micro-batches per optimizer step (effective batch = batch_size × grad_accum)." },
  { key: "lr", group: "Training", kind: "number", help: "Peak learning rate (none: the method's default)." },
  { key: "schedule", group: "Training", kind: "choice", choices: ["cosine", "linear", "constant"], help: "How the learning rate decays after warm-up." },
  { key: "warmup_ratio", group: "Training", kind: "number", help: "Fraction of the steps spent warming the learning rate up from 0." },
  { key: "weight_decay", group: "Training", kind: "number", help: "AdamW weight decay (none: the method's default)." },
  { key: "max_grad_norm", group: "Training", kind: "number", help: "Clip the global gradient norm to this (0 = off)." },
  { key: "seed", group: "Training", kind: "integer", help: "Seed for initialisation, shuffling and the eval split: same seed, same run." },
  { key: "seq_len", group: "Data", kind: "integer", help: "Tokens per training row; longer examples are refused unless `truncate` is on." },
  { key: "packing", group: "Data", kind: "bool", help: "Concatenate examples into full rows instead of padding each one." },
  { key: "truncate", group: "Data", kind: "bool", help: "Cut examples longer than `seq_len` instead of refusing the dataset." },
  { key: "train_on_prompt", group: "Data", kind: "bool", help: "Learn the prompt tokens too, not only the answers." },
  { key: "eval_fraction", group: "Data", kind: "number", help: "Share of the records held out for evaluation." },
  { key: "eval_every", group: "Evaluation", kind: "integer", help: "Evaluate every N steps (0 = only before and after training)." },
  { key: "save_every", group: "Evaluation", kind: "integer", help: "Checkpoint every N steps (0 = only at the end)." },
  { key: "early_stopping_patience", group: "Evaluation", kind: "integer", help: "Stop after this many evaluations without a better eval loss (0 = off)." },
  { key: "sample_tokens", group: "Evaluation", kind: "integer", help: "Tokens generated from an eval prompt at each evaluation (0 = no samples)." },
  { key: "gradient_checkpointing", group: "Device", kind: "bool", help: "Recompute activations in the backward pass: less memory, about a third slower." },
  { key: "device", group: "Device", kind: "text", help: "cpu, cuda, cuda:N or metal." },
  { key: "dtype", group: "Device", kind: "choice", choices: ["auto", "f32", "bf16"], help: "Compute type: bf16 halves weight and activation memory (trainable weights and optimizer state stay f32); auto = bf16 on GPUs with native bf16, f32 elsewhere." },
  { key: "lora.r", group: "Method", kind: "integer", help: "LoRA rank: width of the low-rank update." },
  { key: "lora.alpha", group: "Method", kind: "number", help: "LoRA scale numerator: the update is multiplied by alpha / r." },
  { key: "lora.dropout", group: "Method", kind: "number", help: "Dropout on the LoRA input during training." },
  { key: "lora.targets", group: "Method", kind: "text", help: "Linear modules that get LoRA (comma list of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; Phi-3's fused qkv_proj, gate_up_proj; or all-linear)." },
  { key: "lora.rslora", group: "Method", kind: "bool", help: "Rank-stabilised scale alpha / sqrt(r) instead of alpha / r." },
  { key: "lora.init", group: "Method", kind: "text", help: "Start from this PEFT adapter folder instead of a fresh init (none: fresh)." },
  { key: "lora_plus.lr_ratio", group: "Method", kind: "number", help: "LoRA+: B's learning rate over A's." },
  { key: "ia3.targets", group: "Method", kind: "text", help: "(IA)3: modules whose activations are rescaled (attention outputs, MLP inputs)." },
  { key: "prompt.n_virtual_tokens", group: "Method", kind: "integer", help: "Prompt / prefix tuning, P-Tuning v2: how many virtual tokens are learned." },
  { key: "prefix.encoder_hidden", group: "Method", kind: "integer", help: "Prefix tuning: hidden width of the reparameterisation MLP (0 = the key/value width)." },
  { key: "adapter.bottleneck", group: "Method", kind: "integer", help: "Houlsby adapters: width of the bottleneck (none: 64, or half the hidden size where that is smaller)." },
  { key: "freeze.trainable_layers", group: "Method", kind: "integer", help: "Freeze: how many of the last decoder layers train." },
  { key: "freeze.train_norm", group: "Method", kind: "bool", help: "Freeze: train the final norm as well." },
  { key: "freeze.train_head", group: "Method", kind: "bool", help: "Freeze: train the output projection (ignored when tied to the embeddings)." },
  { key: "bitfit.add_biases", group: "Method", kind: "bool", help: "BitFit: add zero-initialised biases to a model that has none." },
];

export const DEFAULT_LR: Record<MethodKind, number> = {
  full: 2e-5,
  freeze: 2e-5,
  lora: 2e-4,
  qlora: 2e-4,
  lora_plus: 2e-4,
  dora: 2e-4,
  prefix_tuning: 5e-3,
  p_tuning_v2: 1e-2,
  ia3: 3e-3,
  prompt_tuning: 3e-2,
  adapter: 1e-3,
  bitfit: 1e-3,
};

export function configFor(method: MethodKind): TrainConfig {
  return trainConfig(method);
}

/** Whether `key` changes anything for `method` (as `TrainConfig::key_applies`). */
export function keyApplies(method: MethodKind, key: string): boolean {
  const [head] = key.split(".");
  const lora = ["lora", "qlora", "lora_plus", "dora"].includes(method);
  switch (head) {
    case "lora":
      return lora;
    case "lora_plus":
      return method === "lora_plus";
    case "ia3":
      return method === "ia3";
    case "prompt":
      return ["prompt_tuning", "prefix_tuning", "p_tuning_v2"].includes(method);
    case "prefix":
      return method === "prefix_tuning";
    case "adapter":
      return method === "adapter";
    case "freeze":
      return method === "freeze";
    case "bitfit":
      return method === "bitfit";
    default:
      return true;
  }
}
