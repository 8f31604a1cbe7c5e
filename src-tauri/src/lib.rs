//! The desktop shell: Tauri commands that forward to the studio crate. No logic lives here
//! that the CLI does not also have; every command is a one-line call into `whetstone_studio`.

use whetstone_studio::{DataDir, DoctorReport};

/// Errors cross the bridge as plain messages the UI shows as they are.
type CommandResult<T> = Result<T, String>;

#[tauri::command]
async fn doctor() -> CommandResult<DoctorReport> {
    let dir = DataDir::locate().map_err(|e| e.to_string())?;
    Ok(whetstone_studio::doctor(&dir).await)
}

pub fn run() {
    let result = tauri::Builder::default()
        .invoke_handler(tauri::generate_handler![doctor])
        .run(tauri::generate_context!());
    if let Err(e) = result {
        eprintln!("error: the Whetstone window could not start: {e}");
        std::process::exit(2);
    }
}
