//! Per-call cost of the plugin boundary: the same tiny task called directly (its rlib linked into
//! this binary) and through the loaded cdylib (`ForeignTask`: vtable, `catch_unwind` guard,
//! tensor hand-over). Prints ns/call; asserts nothing about time.
//!
//! Run: `cargo bench -p vpt-integration --bench boundary` (after `cargo build --release --workspace`).

use serde_json::json;
use std::time::Instant;
use vpt_sdk::{BatchSource, BuildContext, Construction, Differentiation, Task};

/// ns per call of `f`: the best of 5 repetitions of `iters` calls (after a warm-up), so that
/// other load on the machine inflates the figure as little as possible.
fn time_ns(iters: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iters / 10 {
        f();
    }
    (0..5)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..iters {
                f();
            }
            t0.elapsed().as_nanos() as f64 / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn row(
    what: &str,
    iters: u32,
    direct: &mut dyn Task,
    foreign: &mut dyn Task,
    f: fn(&mut dyn Task),
) {
    let d = time_ns(iters, || f(direct));
    let ffi = time_ns(iters, || f(foreign));
    println!("{what:<34} {d:>10.0} {ffi:>10.0} {:>10.0}", ffi - d);
}

fn main() {
    tch::set_num_threads(1);
    let ctx = BuildContext {
        seed: 1,
        device: "cpu".into(),
    };
    let cfg = json!({ "dim": 8, "hidden": 16, "classes": 4, "batch_size": 8 });
    let mut direct = vpt_tiny::vpt_registry()
        .task("tiny")
        .and_then(|e| e.build(&cfg, &ctx))
        .expect("direct tiny");
    let plugin = vpt_host::loader::load(&vpt_integration::tiny_plugin()).expect("loading tiny");
    let mut foreign = plugin.new_task("tiny", &cfg, &ctx).expect("foreign tiny");

    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "call (ns/call)", "direct", "via FFI", "overhead"
    );
    row(
        "after_step (no work)",
        200_000,
        direct.as_mut(),
        &mut foreign,
        |t| {
            t.after_step(1, &[]).unwrap();
        },
    );
    row(
        "parameters (4 tensors out)",
        100_000,
        direct.as_mut(),
        &mut foreign,
        |t| {
            std::hint::black_box(t.parameters().unwrap());
        },
    );
    row(
        "next_batch (3 tensors out)",
        20_000,
        direct.as_mut(),
        &mut foreign,
        |t| {
            std::hint::black_box(t.next_batch(BatchSource::Unlabeled { domain: 0 }).unwrap());
        },
    );
    let batch = direct
        .next_batch(BatchSource::Unlabeled { domain: 0 })
        .unwrap();
    let b2 = vpt_sdk::Batch {
        source: batch.source,
        tensors: batch.tensors.shallow_clone(),
    };
    let d = time_ns(20_000, || {
        let _ = std::hint::black_box(
            direct
                .pretrain_loss(&batch, &Construction::baseline(), Differentiation::Once)
                .unwrap(),
        );
    });
    let f = time_ns(20_000, || {
        let _ = std::hint::black_box(
            foreign
                .pretrain_loss(&b2, &Construction::baseline(), Differentiation::Once)
                .unwrap(),
        );
    });
    println!(
        "{:<34} {d:>10.0} {f:>10.0} {:>10.0}",
        "pretrain_loss (3 in, 1 out, B=8)",
        f - d
    );
}
