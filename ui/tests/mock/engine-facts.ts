// The engine's facts, as Rust states them: `engine-facts.json` is written by a Rust test
// (crates/studio/src/methods.rs, `engine_facts_for_the_ui_mock`), so the mocked backend and
// the component fixtures never re-state keys, help texts, defaults or table columns.
import type { MethodKind } from "../../src/lib/bindings/MethodKind";
import type { RowPhrases } from "../../src/lib/bindings/RowPhrases";
import type { ExportFormat } from "../../src/lib/bindings/ExportFormat";
import type { KeyKind } from "../../src/lib/bindings/KeyKind";
import type { TrainConfig } from "../../src/lib/bindings/TrainConfig";
import raw from "./engine-facts.json";

export interface KeyFact {
  key: string;
  group: string;
  kind: KeyKind;
  help: string;
  choices: string[];
}

export interface MethodFacts {
  id: MethodKind;
  /** name, changes architecture, inference latency, compute, use case, difficulty */
  columns: [string, string, string, string, string, string];
  /** the columns' translation keys (`MethodRow.phrases`) */
  phrases: RowPhrases;
  default_lr: number;
  /** what `export --format F` answers for a run of this method (null: it exports) */
  export_refusals: Record<ExportFormat, string | null>;
  /** llama.cpp loads its checkpoint as a GGUF LoRA adapter (else GGUF exports merge) */
  gguf_adapter: boolean;
  /** the method table's trainable count and memory estimate on SmolLM2-135M, CPU, f32 */
  table_trainable: number;
  table_memory_cpu: number;
  /** `TrainConfig::for_method` */
  config: TrainConfig;
  /** the keys `TrainConfig::key_applies` accepts for this method */
  applies: string[];
  /** trainable parameters on SmolLM2-135M with these `--set` pairs on the defaults */
  trainable_smollm2: { sets: string[]; params: number }[];
}

export const FACTS = raw as unknown as {
  smollm2_params: number;
  keys: KeyFact[];
  methods: MethodFacts[];
};

export function methodFacts(id: MethodKind): MethodFacts {
  const m = FACTS.methods.find((x) => x.id === id);
  if (!m) throw new Error(`engine facts: no method ${id}`);
  return m;
}
