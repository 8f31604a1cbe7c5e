// No console window behind the app on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

/// Training allocates and frees many large tensors per step; mimalloc reuses them where the
/// system allocator returns them to the OS (the CLI uses it for the same reason).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    whetstone_desktop::run();
}
