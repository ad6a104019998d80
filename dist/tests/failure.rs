//! Failure handling: a rank that dies or hangs makes its peer fail with a clear error in bounded
//! time, and a peer that never arrives makes the rendezvous fail with the address in the message.
mod common;

use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};
use vpt_dist::{Backend, Error, ProcessGroup};

const TIMEOUT: Duration = Duration::from_secs(4);

/// Rank 0 runs an all-reduce that rank 1 never joins; returns the error text and elapsed time.
fn lonely_all_reduce(pg: &ProcessGroup) -> (String, Duration) {
    let mut t = Tensor::ones([1024], (Kind::Float, Device::Cpu));
    let start = Instant::now();
    let err = pg
        .all_reduce_sum(&mut t)
        .expect_err("all_reduce without the peer must fail");
    let elapsed = start.elapsed();
    match &err {
        Error::Collective {
            op,
            rank,
            world,
            timed_out,
            ..
        } => {
            assert_eq!((*op, *rank, *world), ("all_reduce_sum", 0, 2), "{err}");
            assert!(timed_out, "not classified as timeout/lost peer: {err}");
        }
        other => panic!("expected a Collective error, got {other}"),
    }
    (err.to_string(), elapsed)
}

#[test]
fn dead_peer_fails_fast() {
    const TEST: &str = "dead_peer_fails_fast";
    if let Some(w) = common::worker(TEST) {
        tch::set_num_threads(1);
        let pg = ProcessGroup::from_env(Backend::Gloo, TIMEOUT)
            .unwrap()
            .unwrap();
        if w.rank == 1 {
            std::process::exit(0); // dies without joining the collective or shutting down
        }
        let (msg, elapsed) = lonely_all_reduce(&pg);
        println!(
            "RANK0-ERROR: {msg}\nRANK0-ELAPSED-MS: {}",
            elapsed.as_millis()
        );
        assert!(
            elapsed < TIMEOUT + Duration::from_secs(3),
            "took {elapsed:?}"
        );
        return;
    }
    let start = Instant::now();
    let outcomes = common::spawn(TEST, 2, Duration::from_secs(40));
    common::assert_all_ok(TEST, &outcomes);
    let out = &outcomes[0].output;
    eprintln!("{out}");
    assert!(
        out.contains("rank 0/2: all_reduce_sum failed (timeout or lost peer)"),
        "{out}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn stuck_peer_times_out() {
    const TEST: &str = "stuck_peer_times_out";
    if let Some(w) = common::worker(TEST) {
        tch::set_num_threads(1);
        let pg = ProcessGroup::from_env(Backend::Gloo, TIMEOUT)
            .unwrap()
            .unwrap();
        if w.rank == 1 {
            // Alive but never joins: only the timeout can end rank 0's wait.
            std::thread::sleep(TIMEOUT * 2 + Duration::from_secs(1));
            std::process::exit(0);
        }
        let (msg, elapsed) = lonely_all_reduce(&pg);
        println!(
            "RANK0-ERROR: {msg}\nRANK0-ELAPSED-MS: {}",
            elapsed.as_millis()
        );
        assert!(
            elapsed >= TIMEOUT - Duration::from_millis(500),
            "failed before the timeout: {elapsed:?}"
        );
        assert!(
            elapsed < TIMEOUT + Duration::from_secs(3),
            "took {elapsed:?}"
        );
        assert!(msg.to_ascii_lowercase().contains("timed out"), "{msg}");
        return;
    }
    let outcomes = common::spawn(TEST, 2, Duration::from_secs(40));
    common::assert_all_ok(TEST, &outcomes);
    eprintln!("{}", outcomes[0].output);
}

#[test]
fn missing_peer_fails_rendezvous() {
    let port = common::free_port();
    let start = Instant::now();
    let err = ProcessGroup::new(
        0,
        2,
        "127.0.0.1",
        port,
        Backend::Gloo,
        Duration::from_secs(3),
    )
    .expect_err("rendezvous without rank 1 must fail");
    let elapsed = start.elapsed();
    let msg = err.to_string();
    eprintln!("{msg} (after {elapsed:?})");
    assert!(matches!(err, Error::Init { .. }), "{msg}");
    assert!(
        msg.contains(&format!(
            "rank 0/2: could not form the process group at 127.0.0.1:{port}"
        )),
        "{msg}"
    );
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

#[test]
fn invalid_arguments_are_refused_before_any_io() {
    let err = ProcessGroup::new(2, 2, "127.0.0.1", 1, Backend::Gloo, TIMEOUT).unwrap_err();
    assert!(
        err.to_string()
            .contains("rank 2 is not in a world of size 2"),
        "{err}"
    );
    let err = ProcessGroup::new(0, 2, " ", 1, Backend::Gloo, TIMEOUT).unwrap_err();
    assert!(err.to_string().contains("address is empty"), "{err}");
    if Backend::nccl_build_status() != "compiled" {
        let err = ProcessGroup::new(0, 2, "127.0.0.1", 1, Backend::Nccl, TIMEOUT).unwrap_err();
        assert!(
            matches!(
                err,
                Error::BackendUnavailable {
                    backend: "nccl",
                    ..
                }
            ),
            "{err}"
        );
    }
}
