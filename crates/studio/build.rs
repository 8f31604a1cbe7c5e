//! Records the versions of the libraries that matter to a bug report (candle, tauri, ...)
//! from the workspace lock file, so `whetstone doctor` can print them.

fn main() {
    // Read at run time: a build script binary compiled in another checkout that shares the
    // target folder would otherwise look for that checkout's lock file.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let lock = std::path::Path::new(&manifest).join("../../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let wanted = [
        "candle-core",
        "tokenizers",
        "tauri",
        "sqlx",
        "hf-hub",
        "safetensors",
    ];
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let mut found = Vec::new();
    let mut name: Option<&str> = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"'));
        } else if let (Some(n), Some(v)) = (name, line.strip_prefix("version = ")) {
            if wanted.contains(&n) && !found.iter().any(|(f, _): &(String, String)| f == n) {
                found.push((n.to_string(), v.trim_matches('"').to_string()));
            }
            name = None;
        }
    }
    let joined: Vec<String> = found.iter().map(|(n, v)| format!("{n}={v}")).collect();
    println!(
        "cargo:rustc-env=WHETSTONE_LIB_VERSIONS={}",
        joined.join(",")
    );
}
