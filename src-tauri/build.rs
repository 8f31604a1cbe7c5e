// The window's commands come from one list, `commands.list`: this script generates the
// `generate_handler!` call that src/lib.rs includes, gives each command its
// `allow-<command>` permission, and stops the build when capabilities/default.json does not
// grant exactly those (a command the window cannot call, or a grant for one that is gone).

fn main() {
    println!("cargo:rerun-if-changed=commands.list");
    println!("cargo:rerun-if-changed=capabilities/default.json");
    // tauri_build keeps the names for the whole build
    let list: &'static str = Box::leak(
        std::fs::read_to_string("commands.list")
            .expect("src-tauri/commands.list")
            .into_boxed_str(),
    );
    let commands: Vec<&'static str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let caps = std::fs::read_to_string("capabilities/default.json")
        .expect("src-tauri/capabilities/default.json");
    let granted: std::collections::BTreeSet<String> = caps
        .split('"')
        .filter_map(|s| s.strip_prefix("allow-"))
        .map(|s| s.replace('-', "_"))
        .collect();
    let wanted: std::collections::BTreeSet<String> =
        commands.iter().map(|c| c.to_string()).collect();
    if granted != wanted {
        panic!(
            "capabilities/default.json must grant exactly the commands of commands.list: missing {:?}, not a command {:?}",
            wanted.difference(&granted).collect::<Vec<_>>(),
            granted.difference(&wanted).collect::<Vec<_>>()
        );
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(
        out.join("handler.rs"),
        format!("tauri::generate_handler![{}]\n", commands.join(", ")),
    )
    .expect("write handler.rs");
    tauri_build::try_build(
        tauri_build::Attributes::new()
            .app_manifest(tauri_build::AppManifest::new().commands(commands.leak())),
    )
    .expect("tauri build script failed");
}
