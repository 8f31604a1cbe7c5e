//! DoRA: LoRA's low-rank direction with a learned magnitude per output row, on LoRA's code
//! path (`lora::apply` with [`Variant::Dora`]); its settings are LoRA's.

use super::lora::{self, Variant};
use super::*;

pub(super) struct Dora;

impl Method for Dora {
    fn describe(&self) -> Description {
        Description {
            name: "DoRA",
            changes_architecture: phrase::NO_MERGEABLE,
            inference_latency: phrase::NONE_AFTER_MERGE,
            compute: phrase::LOW_MEDIUM,
            use_case: phrase::p("use.dora", "better than LoRA at small r"),
            difficulty: phrase::MEDIUM,
        }
    }
    fn sections(&self) -> &'static [&'static str] {
        lora::SECTIONS
    }
    fn default_lr(&self) -> f64 {
        lora::LORA_LR
    }
    fn validate(
        &self,
        s: &MethodSections,
        _seq_len: usize,
        model: &ModelConfig,
    ) -> std::result::Result<(), String> {
        lora::validate(s, model)
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
    fn checkpoint_file(&self) -> &'static str {
        "adapter_model.safetensors"
    }
    fn peft_config(
        &self,
        s: &MethodSections,
        base_model: &str,
        model: &ModelConfig,
    ) -> Option<serde_json::Value> {
        Some(lora::peft_config(s, base_model, model, true))
    }
    fn exports(&self) -> Exports {
        // llama.cpp's LoRA adapters have no place for the magnitudes
        Exports {
            gguf_adapter: false,
            ..lora::EXPORTS
        }
    }
}
