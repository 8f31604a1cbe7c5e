//! `whetstone serve`: the OpenAI-compatible server over one base and its adapters.

use crate::common::{open_store, UserError};
use crate::infer::{load, LoadHow};
use std::process::ExitCode;
use whetstone_studio::serve::{self, ServeOptions};

/// `whetstone serve`'s arguments, as clap reads them.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// A registered model id, an HF model folder or a .gguf file.
    #[arg(long)]
    pub model: String,
    /// Serve an adapter as model NAME: a run id, or an adapter / checkpoint / PEFT folder
    /// (repeatable). Every adapter shares the base's weights.
    #[arg(long = "adapter", value_name = "NAME=RUN|DIR")]
    pub adapters: Vec<String>,
    /// The address to listen on; anything but a loopback address is reachable from other
    /// machines.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on every /v1 request (or set WHETSTONE_API_KEY).
    #[arg(long, env = "WHETSTONE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Requests that may wait while one is answered; more get 429.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute in f32, bf16, or auto (bf16 on GPUs with native bf16).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Store the decoder linears as NF4 (the base QLoRA trains on; a quarter of the memory).
    #[arg(long)]
    pub nf4: bool,
    /// Print one JSON line `{"url", "models": [...]}` once listening, instead of prose.
    #[arg(long)]
    pub json: bool,
}

fn adapter_pairs(specs: &[String]) -> Result<Vec<(String, String)>, UserError> {
    specs
        .iter()
        .map(|s| match s.split_once('=') {
            Some((name, source)) if !name.is_empty() && !source.is_empty() => {
                Ok((name.to_string(), source.to_string()))
            }
            _ => Err(UserError(format!(
                "--adapter {s}: expected NAME=RUN or NAME=FOLDER, e.g. --adapter tuned=20261207-1"
            ))),
        })
        .collect()
}

pub async fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let adapters = adapter_pairs(&a.adapters)?;
    let how = LoadHow {
        device: &a.device,
        nf4: a.nf4,
        dtype: &a.dtype,
    };
    if !serve::is_loopback(&a.host) {
        eprintln!(
            "note: listening on {} — other machines on the network can reach this server{}",
            a.host,
            if a.api_key.is_some() {
                ""
            } else {
                " and no --api-key is set"
            }
        );
    }
    let loaded = load(&a.model, None, how).await?;
    let store = open_store().await?;
    let options = ServeOptions {
        host: a.host.clone(),
        port: a.port,
        api_key: a.api_key.clone(),
        max_queue: a.max_queue,
    };
    let base = serve::base_name(&a.model);
    let mut handle = serve::start(
        std::sync::Arc::new(loaded),
        &base,
        &adapters,
        &options,
        store,
    )
    .await
    .map_err(UserError)?;
    let status = handle.status();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"url": status.url, "models": status.models})
        );
    } else {
        println!("Serving at {}", status.url);
        for m in &status.models {
            println!("  model `{}` ({}: {})", m.id, m.kind, m.source);
        }
        println!(
            "Point an OpenAI client at it: OpenAI(base_url=\"{}\", api_key=\"{}\"). Ctrl-C stops.",
            status.url,
            if a.api_key.is_some() {
                "<your key>"
            } else {
                "none"
            }
        );
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            eprintln!("stopping…");
            handle.stop().await;
        }
        _ = handle.wait() => {}
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_flags_split_at_the_first_equals_sign() {
        let p = adapter_pairs(&["a=run-1".into(), "b=/x/y=z".into()]).unwrap();
        assert_eq!(p[1], ("b".to_string(), "/x/y=z".to_string()));
        assert!(adapter_pairs(&["noname".into()]).is_err());
        assert!(adapter_pairs(&["=dir".into()]).is_err());
    }
}
