//! f32 matmul throughput on this CPU, for `bench/run` (not a test): candle's matmul (the
//! `gemm` crate) and the engine's own kernel (`kernels::gemm`), at the same shapes.
//!
//! Prints one JSON line per system and shape: `{"system":"candle","m":..,"k":..,"n":..,"gflops":..}`.
//! Shapes are those of SmolLM2-135M's projections at batch 4 × seq 256.

use candle_core::{Device, Tensor};
use std::time::Instant;
use whetstone_engine::kernels::gemm::{self, Mat};

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let shapes = [
        (1024, 576, 576),
        (1024, 576, 1536),
        (1024, 1536, 576),
        (1024, 576, 192),
    ];
    for (m, k, n) in shapes {
        let a = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let b = Tensor::randn(0f32, 1.0, (k, n), &dev)?;
        for _ in 0..3 {
            a.matmul(&b)?; // warm-up: thread pool, caches
        }
        let iters = 50;
        let t = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(a.matmul(&b)?);
        }
        let secs = t.elapsed().as_secs_f64() / iters as f64;
        let gflops = 2.0 * (m * k * n) as f64 / secs / 1e9;
        println!(r#"{{"system":"candle","m":{m},"k":{k},"n":{n},"gflops":{gflops:.1}}}"#);
        let (ad, bd) = (a.to_vec2::<f32>()?.concat(), b.to_vec2::<f32>()?.concat());
        let mut c = vec![0f32; m * n];
        let run =
            |c: &mut [f32]| gemm::matmul(c, n, Mat::new(&ad, m, k), Mat::new(&bd, k, n), false);
        for _ in 0..3 {
            run(&mut c);
        }
        let t = Instant::now();
        for _ in 0..iters {
            run(&mut c);
        }
        let secs = t.elapsed().as_secs_f64() / iters as f64;
        let gflops = 2.0 * (m * k * n) as f64 / secs / 1e9;
        let kernel = format!("{:?}", gemm::kernel()).to_lowercase();
        println!(
            r#"{{"system":"whetstone-{kernel}","m":{m},"k":{k},"n":{n},"gflops":{gflops:.1}}}"#
        );
    }
    Ok(())
}
