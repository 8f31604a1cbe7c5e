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
import { FACTS, methodFacts } from "./engine-facts";

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
export const METHOD_IDS: MethodKind[] = FACTS.methods.map((m) => m.id);

/** name, changes architecture, inference latency, compute, use case, difficulty */
export const METHOD_COLUMNS = Object.fromEntries(FACTS.methods.map((m) => [m.id, m.columns])) as Record<
  MethodKind,
  [string, string, string, string, string, string]
>;

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
      // SmolLM2 has no biases: only added ones train
      return cfg.bitfit.add_biases ? L * Object.values(LINEAR_SHAPES).reduce((s, [, o]) => s + o, 0) : 0;
    case "prompt_tuning":
      return cfg.prompt.n_virtual_tokens * SMOL.hidden;
    case "prefix_tuning": {
      const hidden = cfg.prefix.encoder_hidden || KV;
      const n = cfg.prompt.n_virtual_tokens;
      return n * KV + KV * hidden + hidden + hidden * (2 * L * KV) + 2 * L * KV;
    }
    case "p_tuning_v2":
      return cfg.prompt.n_virtual_tokens * 2 * L * KV;
    case "adapter": {
      const b = cfg.adapter.bottleneck ?? Math.max(1, Math.min(64, Math.floor(SMOL.hidden / 2)));
      return L * 2 * (SMOL.hidden * b + b + b * SMOL.hidden + SMOL.hidden);
    }
    default:
      // a method this formula does not know yet: the engine's count at its defaults
      return methodFacts(cfg.method).trainable_smollm2[0].params;
  }
}

// --- settings ---------------------------------------------------------------------------
export const KEY_INFO = FACTS.keys;

export const DEFAULT_LR = Object.fromEntries(FACTS.methods.map((m) => [m.id, m.default_lr])) as Record<MethodKind, number>;

export function configFor(method: MethodKind): TrainConfig {
  return trainConfig(method);
}

/** Whether `key` changes anything for `method` (as `TrainConfig::key_applies`). */
export function keyApplies(method: MethodKind, key: string): boolean {
  return methodFacts(method).applies.includes(key);
}
