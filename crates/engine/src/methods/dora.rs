//! DoRA: LoRA's low-rank direction with a learned magnitude per output row, on LoRA's code
//! path (`lora::apply` with [`Variant::Dora`]); its settings are LoRA's.

use super::lora::{self, Variant};
use super::*;

pub(super) struct Dora;

impl Method for Dora {
    fn facts(&self) -> Facts {
        Facts {
            description: Description {
                name: "DoRA",
                changes_architecture: phrase::NO_MERGEABLE,
                inference_latency: phrase::NONE_AFTER_MERGE,
                compute: phrase::LOW_MEDIUM,
                use_case: phrase::p("use.dora", "better than LoRA at small r"),
                difficulty: phrase::MEDIUM,
            },
            sections: lora::SECTIONS,
            default_lr: lora::LORA_LR,
            default_weight_decay: 0.0,
            checkpoint_file: PEFT_FILE,
            exports: {
                // llama.cpp's LoRA adapters have no place for the magnitudes
                Exports {
                    gguf_adapter: false,
                    ..lora::EXPORTS
                }
            },
            peft_type: None,
            quantizes_base: false,
        }
    }
    fn validate(&self, c: &Check) -> Checked<()> {
        lora::validate(c.sections, c.model)
    }
    fn apply(&self, model: &mut DecoderModel, a: &MethodArgs) -> Result<Vec<Param>> {
        lora::apply(model, a, Variant::Dora)
    }
    fn trainable_params(&self, s: &MethodSections, c: &ModelConfig) -> u64 {
        lora::trainable(s, c, true)
    }
    fn memory(&self, s: &MethodSections, c: &ModelConfig) -> MemoryShape {
        lora::memory(s, c, Variant::Dora)
    }
    fn init_dir<'a>(&self, s: &'a MethodSections) -> Option<&'a str> {
        s.lora.init.as_deref()
    }
    fn peft_config(&self, s: &MethodSections, base: &str, model: &ModelConfig) -> Option<Value> {
        Some(lora::peft_config(s, base, model, true))
    }
}
