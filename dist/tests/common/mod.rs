//! Multi-process test harness: a test re-executes its own binary once per rank, selecting the
//! worker with environment variables, and kills every child when it fails or times out.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set in a child: which test's worker to run.
pub const WORKER_VAR: &str = "VPT_DIST_TEST_WORKER";

/// What a worker child knows about itself.
pub struct Worker {
    /// This child's rank.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    /// The TCPStore port.
    pub port: u16,
}

/// `Some` in a child spawned for `test`, `None` in the parent test.
pub fn worker(test: &str) -> Option<Worker> {
    if std::env::var(WORKER_VAR).ok()? != test {
        return None;
    }
    let get = |k: &str| std::env::var(k).unwrap().parse::<usize>().unwrap();
    Some(Worker {
        rank: get("RANK"),
        world: get("WORLD_SIZE"),
        port: get("MASTER_PORT") as u16,
    })
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How one child ended.
#[derive(Debug)]
pub struct Outcome {
    /// Its rank.
    pub rank: usize,
    /// Exit code (`None` when killed).
    pub code: Option<i32>,
    /// Its stdout and stderr together.
    pub output: String,
}

struct Children(Vec<(usize, Child, PathBuf)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `world` children of this test binary for `test` (torchrun-style env, loopback master),
/// waits at most `limit` for all of them, and returns how each ended. Panics (after killing the
/// children) when the limit passes.
pub fn spawn(test: &str, world: usize, limit: Duration) -> Vec<Outcome> {
    let port = free_port();
    let exe = std::env::current_exe().unwrap();
    let mut children = Children(Vec::new());
    for rank in 0..world {
        let log = std::env::temp_dir().join(format!("vpt-dist-{test}-{port}-{rank}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(&exe)
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(WORKER_VAR, test)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        children.0.push((rank, child, log));
    }
    let start = Instant::now();
    let mut codes: Vec<Option<Option<i32>>> = vec![None; world];
    while codes.iter().any(Option::is_none) {
        for (i, (_, child, _)) in children.0.iter_mut().enumerate() {
            if codes[i].is_none() {
                if let Some(status) = child.try_wait().unwrap() {
                    codes[i] = Some(status.code());
                }
            }
        }
        if start.elapsed() > limit {
            let logs: Vec<String> = children.0.iter().map(|(_, _, l)| read(l)).collect();
            drop(children);
            panic!(
                "{test}: children still running after {limit:?}; logs:\n{}",
                logs.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    children
        .0
        .iter()
        .zip(codes)
        .map(|((rank, _, log), code)| Outcome {
            rank: *rank,
            code: code.unwrap(),
            output: read(log),
        })
        .collect()
}

/// Asserts every child exited 0, showing all logs otherwise.
pub fn assert_all_ok(test: &str, outcomes: &[Outcome]) {
    if outcomes.iter().any(|o| o.code != Some(0)) {
        let logs: Vec<String> = outcomes
            .iter()
            .map(|o| format!("rank {} exit {:?}:\n{}", o.rank, o.code, o.output))
            .collect();
        panic!("{test}: a rank failed\n{}", logs.join("\n---\n"));
    }
}

fn read(path: &PathBuf) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let _ = std::fs::remove_file(path);
    s
}
