//! The `ollama` format: a `Modelfile` whose template is the chat template in Ollama's syntax.

use super::*;

/// The chat format of a Jinja chat template, in Ollama's template syntax, with its stop words.
pub(super) fn ollama_template(jinja: &str) -> Option<(&'static str, &'static [&'static str])> {
    if jinja.contains("<|im_start|>") {
        Some((
            "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n",
            &["<|im_start|>", "<|im_end|>"],
        ))
    } else if jinja.contains("<|start_header_id|>") {
        Some((
            "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>",
            &["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        ))
    } else if jinja.contains("[INST]") {
        Some((
            "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }} [/INST]{{ .Response }}</s>",
            &["[INST]", "[/INST]"],
        ))
    } else {
        None
    }
}

/// An Ollama `Modelfile`.
pub fn modelfile(source: &ModelSource, from: &str, adapter: Option<&str>) -> String {
    let mut s = format!(
        "# Made by Whetstone {APP_VERSION}. Load it with: ollama create <name> -f Modelfile\nFROM {from}\n"
    );
    if let Some(a) = adapter {
        s.push_str(&format!("ADAPTER {a}\n"));
    }
    let mut stops: Vec<String> = vec![];
    match source.chat_template.as_deref().and_then(ollama_template) {
        Some((template, stop)) => {
            s.push_str(&format!("TEMPLATE \"\"\"{template}\"\"\"\n"));
            stops.extend(stop.iter().map(|x| x.to_string()));
        }
        None => s.push_str(
            "# no TEMPLATE: this chat format has no known Ollama equivalent; Ollama falls back to the GGUF's own template\n",
        ),
    }
    if let Some(eos) = &source.tokenizer.eos_token {
        if !stops.contains(eos) {
            stops.push(eos.clone());
        }
    }
    for stop in stops {
        s.push_str(&format!("PARAMETER stop \"{stop}\"\n"));
    }
    s
}
