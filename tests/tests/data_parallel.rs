//! Data-parallel V-pretraining on c10d/Gloo over loopback, through the real `vpt` binary
//! launched with the torchrun environment: two ranks end with the same parameters as one rank
//! on the combined batch (baseline and V), and a rank that dies stops the other with an error.

use std::{
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};
use vpt_integration::{scratch_dir, tiny_config_path, vpt_command};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_rank(rank: usize, port: u16, out: &Path, args: &[&str]) -> Child {
    vpt_command()
        .arg("run")
        .arg(tiny_config_path())
        .args(args)
        .arg("--out")
        .arg(out)
        .envs([
            ("RANK", rank.to_string()),
            ("LOCAL_RANK", rank.to_string()),
            ("WORLD_SIZE", "2".into()),
            ("MASTER_ADDR", "127.0.0.1".into()),
            ("MASTER_PORT", port.to_string()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn theta(dir: &Path) -> Vec<(String, Vec<f64>)> {
    let c = vpt_host::checkpoint::load_latest(dir).unwrap();
    c.tensors
        .iter()
        .filter(|(n, _)| n.starts_with("theta/") || n.starts_with("phi/"))
        .map(|(n, t)| {
            (
                n.to_string(),
                Vec::<f64>::try_from(t.flatten(0, -1)).unwrap(),
            )
        })
        .collect()
}

fn equivalence(tag: &str, extra: &[&str]) {
    let root = scratch_dir(tag);
    let mut args = vec![
        "--set",
        "run.steps=15",
        "--set",
        "run.eval_every=0",
        "--set",
        "run.checkpoint_every=0",
    ];
    args.extend_from_slice(extra);
    let out = vpt_command()
        .arg("run")
        .arg(tiny_config_path())
        .args(&args)
        .arg("--out")
        .arg(root.join("single"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "single process: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let ranks: Vec<Child> = (0..2)
        .map(|r| spawn_rank(r, port, &root.join("dp"), &args))
        .collect();
    for (r, child) in ranks.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "rank {r}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (single, dp) = (theta(&root.join("single")), theta(&root.join("dp")));
    assert_eq!(single.len(), dp.len());
    assert!(!single.is_empty());
    let mut worst = 0.0f64;
    for ((n1, a), (n2, b)) in single.iter().zip(&dp) {
        assert_eq!(n1, n2);
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
        }
    }
    assert!(
        worst < 1e-9,
        "{tag}: two ranks differ from one rank on the combined batch by {worst:e}"
    );
}

#[test]
fn two_ranks_match_one_rank_on_the_combined_batch_baseline() {
    equivalence(
        "dp-baseline",
        &[
            "--set",
            "meta.estimator=none",
            "--set",
            "designer.enabled=false",
        ],
    );
}

#[test]
fn two_ranks_match_one_rank_on_the_combined_batch_v() {
    equivalence("dp-v", &[]);
}

#[test]
fn a_dying_rank_stops_the_other_with_a_clear_error() {
    let root = scratch_dir("dp-dies");
    let port = free_port();
    let args = [
        "--set",
        "run.steps=100000000",
        "--set",
        "run.eval_every=0",
        "--set",
        "run.checkpoint_every=0",
    ];
    // A short collective timeout, so that even a peer lost mid-rendezvous is reported quickly.
    std::env::set_var("VPT_DIST_TIMEOUT", "15");
    let mut survivor = spawn_rank(0, port, &root, &args);
    let mut victim = spawn_rank(1, port, &root, &args);
    std::env::remove_var("VPT_DIST_TIMEOUT");
    std::thread::sleep(Duration::from_millis(3000));
    victim.kill().unwrap();
    let _ = victim.wait();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = survivor.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = survivor.kill();
            panic!("the surviving rank hung");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(survivor.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("data parallel"), "unclear error: {err}");
}
