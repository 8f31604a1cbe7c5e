//! Which compute devices this build can use on this machine.
//!
//! The CPU is always present. CUDA and Metal are probed only when the binary was compiled
//! with the matching cargo feature; a build without them says what it is missing instead of
//! pretending the GPU is absent.

use serde::Serialize;
use ts_rs::TS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum DeviceKind {
    Cpu,
    Cuda,
    Metal,
}

impl DeviceKind {
    /// The name used in `--set device=...` and in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
            DeviceKind::Metal => "metal",
        }
    }
}

#[derive(Debug, Clone, Serialize, TS)]
#[ts(export)]
pub struct DeviceInfo {
    pub kind: DeviceKind,
    /// Index for `--set device=cuda:N`; 0 for the CPU.
    pub ordinal: u32,
    pub name: String,
    /// Whether the device could be opened now.
    pub available: bool,
    /// Logical cores (CPU) or streaming multiprocessors are not comparable; this is the CPU's.
    pub threads: Option<u32>,
    /// Total memory the device can address, if known (system RAM for the CPU).
    #[ts(type = "number | null")]
    pub memory_bytes: Option<u64>,
    /// Instruction-set extensions that matter for speed (`avx2`, `fma`, `neon`, ...).
    pub features: Vec<String>,
    /// Whether the device computes in bf16 natively, so `dtype=auto` trains in bf16 there.
    pub bf16: bool,
    /// Why the device is unavailable, or what a different build would add.
    pub note: Option<String>,
}

impl DeviceInfo {
    /// `cpu:0`, `cuda:1`: the name `--set device=` takes.
    pub fn label(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.ordinal)
    }
}

/// Every device this build knows how to use, the CPU first.
pub fn detect_devices() -> Vec<DeviceInfo> {
    let mut devices = vec![cpu_info()];
    devices.extend(cuda_info());
    devices.extend(metal_info());
    devices
}

fn cpu_info() -> DeviceInfo {
    DeviceInfo {
        kind: DeviceKind::Cpu,
        ordinal: 0,
        name: cpu_model_name().unwrap_or_else(|| std::env::consts::ARCH.to_string()),
        available: true,
        threads: std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() as u32),
        memory_bytes: total_memory_bytes(),
        features: cpu_features(),
        bf16: false,
        note: gpu_build_note(),
    }
}

fn gpu_build_note() -> Option<String> {
    if cfg!(any(feature = "cuda", feature = "metal")) {
        None
    } else if cfg!(target_os = "macos") {
        Some("CPU-only build: a build with the `metal` feature trains on the Apple GPU".into())
    } else {
        Some(
            "CPU-only build: a build with the `cuda` feature trains on NVIDIA GPUs \
             (QLoRA in bf16, many times faster than the CPU)"
                .into(),
        )
    }
}

#[cfg(target_arch = "x86_64")]
fn cpu_features() -> Vec<String> {
    let mut f = Vec::new();
    macro_rules! probe {
        ($($name:tt),*) => {$(
            if std::arch::is_x86_feature_detected!($name) {
                f.push($name.to_string());
            }
        )*};
    }
    probe!(
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bf16"
    );
    f
}

#[cfg(target_arch = "aarch64")]
fn cpu_features() -> Vec<String> {
    let mut f = Vec::new();
    macro_rules! probe {
        ($($name:tt),*) => {$(
            if std::arch::is_aarch64_feature_detected!($name) {
                f.push($name.to_string());
            }
        )*};
    }
    probe!("neon", "fp16", "bf16", "i8mm");
    f
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_features() -> Vec<String> {
    Vec::new()
}

fn read_proc(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn cpu_model_name() -> Option<String> {
    let info = read_proc("/proc/cpuinfo")?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn total_memory_bytes() -> Option<u64> {
    let info = read_proc("/proc/meminfo")?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(feature = "cuda")]
fn cuda_info() -> Vec<DeviceInfo> {
    let (available, bf16, note) = match candle_core::Device::new_cuda(0) {
        Ok(d) => (true, native_bf16(&d), None),
        Err(e) => (
            false,
            false,
            Some(format!("CUDA device 0 could not be opened: {e}")),
        ),
    };
    vec![DeviceInfo {
        kind: DeviceKind::Cuda,
        ordinal: 0,
        name: "CUDA device 0".into(),
        available,
        threads: None,
        memory_bytes: None,
        features: if bf16 { vec!["bf16".into()] } else { vec![] },
        bf16,
        note,
    }]
}

#[cfg(not(feature = "cuda"))]
fn cuda_info() -> Vec<DeviceInfo> {
    Vec::new()
}

#[cfg(feature = "metal")]
fn metal_info() -> Vec<DeviceInfo> {
    let (available, note) = match candle_core::Device::new_metal(0) {
        Ok(_) => (true, None),
        Err(e) => (
            false,
            Some(format!("Metal device could not be opened: {e}")),
        ),
    };
    vec![DeviceInfo {
        kind: DeviceKind::Metal,
        ordinal: 0,
        name: "Apple GPU".into(),
        available,
        threads: None,
        memory_bytes: None,
        features: vec![],
        bf16: false,
        note,
    }]
}

#[cfg(not(feature = "metal"))]
fn metal_info() -> Vec<DeviceInfo> {
    Vec::new()
}

/// Whether `device` computes in bf16 natively: a CUDA device whose kernels run the ops
/// training needs in bf16 (candle builds its bf16 kernels for compute capability 8.0 and
/// newer, so older GPUs fail this probe). The CPU widens bf16 matmuls to f32 and Metal's
/// bf16 coverage is partial, so both answer false; `dtype=bf16` still runs there.
pub fn native_bf16(device: &candle_core::Device) -> bool {
    if !device.is_cuda() {
        return false;
    }
    let probe = || -> candle_core::Result<f32> {
        use candle_core::{DType, Tensor};
        let a = Tensor::ones((16, 16), DType::BF16, device)?;
        let s = (a.matmul(&a)? * 0.01)?;
        let p = candle_nn::ops::softmax_last_dim(&s)?.exp()?.sqrt()?;
        let n = candle_nn::ops::rms_norm(&p, &Tensor::ones(16, DType::BF16, device)?, 1e-5)?;
        n.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()
    };
    matches!(probe(), Ok(v) if v.is_finite())
}

/// The candle device for a user's choice: `cpu`, `cuda`, `cuda:N` or `metal`.
pub fn candle_device(choice: &str) -> Result<candle_core::Device, String> {
    let (kind, ordinal) = match choice.split_once(':') {
        Some((k, n)) => (
            k,
            n.parse::<usize>()
                .map_err(|_| format!("device `{choice}`: `{n}` is not a device number"))?,
        ),
        None => (choice, 0),
    };
    match kind {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" if cfg!(feature = "cuda") => candle_core::Device::new_cuda(ordinal)
            .map_err(|e| format!("device `{choice}`: cannot open the CUDA device: {e}")),
        "metal" if cfg!(feature = "metal") => candle_core::Device::new_metal(ordinal)
            .map_err(|e| format!("device `{choice}`: cannot open the Metal device: {e}")),
        "cuda" | "metal" => Err(format!(
            "device `{choice}`: this build has no {kind} support (rebuild with `--features {kind}`)"
        )),
        other => Err(format!(
            "device `{other}` is unknown (use cpu, cuda, cuda:N or metal)"
        )),
    }
}

/// Resident memory of this process, bytes (0 where the platform does not say).
pub fn rss_bytes() -> u64 {
    read_status_kb("VmRSS:") * 1024
}

/// Peak resident memory of this process, bytes.
pub fn peak_rss_bytes() -> u64 {
    read_status_kb("VmHWM:") * 1024
}

fn read_status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_comes_first_and_is_available() {
        let d = detect_devices();
        assert_eq!(d[0].kind, DeviceKind::Cpu);
        assert!(d[0].available);
        // the CPU runs bf16 (widened matmuls) but not natively: dtype=auto stays f32 there
        assert!(!d[0].bf16 && !native_bf16(&candle_core::Device::Cpu));
        assert!(d[0].threads.unwrap_or(0) >= 1);
        // Opening the CPU device in candle must agree with what we report.
        assert!(candle_core::Device::Cpu.is_cpu());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_reports_memory() {
        let mem = detect_devices()[0].memory_bytes.expect("MemTotal");
        assert!(mem > 256 * 1024 * 1024, "{mem}");
    }

    #[cfg(not(any(feature = "cuda", feature = "metal")))]
    #[test]
    fn cpu_only_build_says_what_a_gpu_build_adds() {
        assert!(detect_devices()[0]
            .note
            .as_deref()
            .unwrap_or("")
            .contains("feature"));
    }
}
