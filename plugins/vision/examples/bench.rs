//! Throughput of `dino_dense` on this machine: images/s of a baseline learner step and of a
//! V step (meta step: g_down, construct, g_pre with create_graph, ∇φ V; plus the learner step
//! on the masked views), plus the cost of `prepare_feedback` and `evaluate`.
//!
//! `cargo run --release -p vpt-vision --example bench -- [threads] [batch] [dim] [depth]`

use std::time::Instant;
use vpt_sdk::testing::sgd_step;
use vpt_sdk::value::{alignment_subset, designer_gradient, feedback_gradient, value, Align};
use vpt_sdk::{BatchSource, BuildContext, Construction, Designer, Task};
use vpt_vision::designer::UnetMask;
use vpt_vision::task::DinoDenseTask;

const UNLABELED: BatchSource = BatchSource::Unlabeled { domain: 0 };
const FEEDBACK: BatchSource = BatchSource::Feedback { set: 0 };

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: i64| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (threads, batch, dim, depth) = (arg(0, 2), arg(1, 32), arg(2, 96), arg(3, 4));
    tch::set_num_threads(threads as i32);
    let cfg = serde_json::json!({
        "batch_size": batch, "vit": {"dim": dim, "depth": depth, "heads": 4},
        "feedback": {"batch_size": batch},
        "eval": {"test_scenes": 128, "feedback_scenes": 64, "general_scenes": 32, "probe_train": 500, "probe_test": 250}
    });
    let ctx = BuildContext {
        seed: 0,
        device: "cpu".into(),
    };
    let t0 = Instant::now();
    let mut task = DinoDenseTask::new(vpt_sdk::parse_config(&cfg)?, &ctx)?;
    println!("config: threads {threads}, batch {batch}, ViT d{dim} depth {depth} heads 4, 2 global 64² + 4 local 32² crops");
    println!("build: {:.2}s", t0.elapsed().as_secs_f64());
    let mut designer = UnetMask::new(
        serde_json::from_str("{}")?,
        &task.info().designer_context,
        &ctx,
    )?;
    let reps = 5;
    let theta_s = alignment_subset(&task)?;
    // Warm-up, then baseline learner steps.
    let bu = task.next_batch(UNLABELED)?;
    sgd_step(&mut task, &bu, &Construction::baseline(), 1e-3, 0)?;
    let mut t_learn = 0.0;
    for s in 1..=reps {
        let bu = task.next_batch(UNLABELED)?;
        let t = Instant::now();
        sgd_step(&mut task, &bu, &Construction::baseline(), 1e-3, s)?;
        t_learn += t.elapsed().as_secs_f64();
    }
    let t_learn = t_learn / reps as f64;
    // prepare_feedback (warm refit) and meta steps.
    let t = Instant::now();
    task.prepare_feedback()?;
    let t_prep_cold = t.elapsed().as_secs_f64();
    let (mut t_prep, mut t_meta, mut t_vlearn) = (0.0, 0.0, 0.0);
    for s in 0..reps {
        let bu = task.next_batch(UNLABELED)?;
        let fb = task.next_batch(FEEDBACK)?;
        let t = Instant::now();
        task.prepare_feedback()?;
        t_prep += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let gd = feedback_gradient(&mut task, &theta_s, &fb)?;
        let f = task.pretrain_forward(&bu)?;
        let v = value(
            &mut task,
            &mut designer,
            &theta_s,
            &gd,
            &[&bu],
            &[&f],
            Align::Dot,
        )?;
        let g = designer_gradient(&v.v, &designer.parameters()?)?;
        assert!(!g.is_empty());
        t_meta += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let c = tch::no_grad(|| designer.construct(&task.design_inputs(&bu)?))?;
        sgd_step(&mut task, &bu, &c, 1e-3, 100 + s)?;
        t_vlearn += t.elapsed().as_secs_f64();
    }
    let (t_prep, t_meta, t_vlearn) = (
        t_prep / reps as f64,
        t_meta / reps as f64,
        t_vlearn / reps as f64,
    );
    let b = batch as f64;
    println!(
        "baseline learner step: {:.3}s = {:.1} images/s",
        t_learn,
        b / t_learn
    );
    println!(
        "prepare_feedback: cold {:.3}s, warm {:.3}s",
        t_prep_cold, t_prep
    );
    println!(
        "meta step (g_down + construct + g_pre create_graph + ∇φ V): {:.3}s",
        t_meta
    );
    println!("learner step on masked views: {:.3}s", t_vlearn);
    let v_total = t_prep + t_meta + t_vlearn;
    println!(
        "V step (prepare_feedback + meta + learner): {:.3}s = {:.1} images/s",
        v_total,
        b / v_total
    );
    let t = Instant::now();
    let m = task.evaluate(None)?;
    println!("evaluate: {:.2}s  {m:?}", t.elapsed().as_secs_f64());
    Ok(())
}
