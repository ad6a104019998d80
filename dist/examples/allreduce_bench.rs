//! All-reduce latency/bandwidth for 1–64 MB on 2 local Gloo ranks, and step-time scaling 1→2
//! ranks for a small MLP (each rank: forward/backward on its half of the batch, one flattened
//! all-reduce of the gradients, SGD step).
//!
//!     cargo run --release -p vpt-dist --example allreduce_bench
//!
//! The parent re-executes itself once per rank with the torchrun variables set (loopback).
use std::process::Command;
use std::time::{Duration, Instant};

use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};
use vpt_dist::{Backend, ProcessGroup};

const BATCH: i64 = 1024; // global batch of the step-time benchmark
const WIDTH: i64 = 512; // MLP hidden width
const STEPS: usize = 20;

fn main() -> anyhow::Result<()> {
    tch::set_num_threads(1); // one core per rank: 1 process × 1 thread vs 2 × 1
    if std::env::var("VPT_DIST_BENCH_CHILD").is_ok() {
        let pg = ProcessGroup::from_env(Backend::Gloo, Duration::from_secs(60))?
            .ok_or_else(|| anyhow::anyhow!("child without WORLD_SIZE"))?;
        return child(&pg);
    }
    let single = step_time(None)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for rank in 0..2 {
        children.push(
            Command::new(&exe)
                .env("VPT_DIST_BENCH_CHILD", "1")
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .spawn()?,
        );
    }
    for mut c in children {
        anyhow::ensure!(c.wait()?.success(), "a bench rank failed");
    }
    println!(
        "step time, 1 rank (batch {BATCH}, 1 thread): {:.2} ms",
        single * 1e3
    );
    Ok(())
}

fn child(pg: &ProcessGroup) -> anyhow::Result<()> {
    let world = pg.world_size() as f64;
    if pg.rank() == 0 {
        println!(
            "all-reduce (sum, f32) on {} Gloo ranks over loopback:",
            pg.world_size()
        );
        println!(
            "{:>8} {:>12} {:>14} {:>14}",
            "MB", "latency ms", "algbw GB/s", "busbw GB/s"
        );
    }
    for mb in [1usize, 4, 16, 64] {
        let numel = (mb << 20) / 4;
        let mut t = Tensor::ones([numel as i64], (Kind::Float, Device::Cpu));
        let iters = if mb >= 16 { 5 } else { 20 };
        pg.all_reduce_sum(&mut t)?; // warm-up (connections, buffers)
        pg.barrier()?;
        let start = Instant::now();
        for _ in 0..iters {
            pg.all_reduce_sum(&mut t)?;
        }
        let dt = start.elapsed().as_secs_f64() / iters as f64;
        let bytes = (mb << 20) as f64;
        if pg.rank() == 0 {
            let algbw = bytes / dt / 1e9;
            // Ring all-reduce moves 2(n−1)/n of the buffer per rank (nccl-tests' bus bandwidth).
            println!(
                "{mb:>8} {:>12.3} {:>14.3} {:>14.3}",
                dt * 1e3,
                algbw,
                algbw * 2.0 * (world - 1.0) / world
            );
        }
    }
    let dt = step_time(Some(pg))?;
    if pg.rank() == 0 {
        println!(
            "step time, 2 ranks (batch {} each + grad all-reduce): {:.2} ms",
            BATCH / 2,
            dt * 1e3
        );
    }
    Ok(())
}

/// Mean seconds per learner step of the MLP on this rank's share of the global batch.
fn step_time(pg: Option<&ProcessGroup>) -> anyhow::Result<f64> {
    let world = pg.map_or(1, |p| p.world_size()) as i64;
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let net = nn::seq()
        .add(nn::linear(&root / "l1", 256, WIDTH, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&root / "l2", WIDTH, WIDTH, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&root / "l3", WIDTH, 10, Default::default()));
    let mut opt = nn::Sgd::default().build(&vs, 0.01)?;
    if let Some(pg) = pg {
        pg.broadcast_params(&mut vs.trainable_variables())?;
    }
    let x = Tensor::randn([BATCH / world, 256], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [BATCH / world], (Kind::Int64, Device::Cpu));
    let mut step = || -> anyhow::Result<()> {
        opt.zero_grad();
        net.forward(&x).cross_entropy_for_logits(&y).backward();
        if let Some(pg) = pg {
            let mut grads: Vec<Tensor> =
                vs.trainable_variables().iter().map(Tensor::grad).collect();
            pg.all_reduce_grads(&mut grads)?;
        }
        opt.step();
        Ok(())
    };
    step()?; // warm-up
    let start = Instant::now();
    for _ in 0..STEPS {
        step()?;
    }
    Ok(start.elapsed().as_secs_f64() / STEPS as f64)
}
