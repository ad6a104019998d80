//! Collectives on 2 loopback ranks over Gloo: values after all_reduce/broadcast/barrier and the
//! flattened multi-tensor helpers.
mod common;

use std::time::Duration;

use tch::{Device, Kind, Tensor};
use vpt_dist::{Backend, ProcessGroup};

const TEST: &str = "collectives_two_ranks";

#[test]
fn collectives_two_ranks() {
    if let Some(w) = common::worker(TEST) {
        return collectives_worker(w);
    }
    let outcomes = common::spawn(TEST, 2, Duration::from_secs(60));
    common::assert_all_ok(TEST, &outcomes);
}

fn f32s(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn collectives_worker(w: common::Worker) {
    tch::set_num_threads(1);
    let pg = ProcessGroup::from_env(Backend::Gloo, Duration::from_secs(20))
        .unwrap()
        .unwrap();
    assert_eq!((pg.rank(), pg.world_size()), (w.rank, w.world));
    let r = w.rank as f64;
    let opts = (Kind::Float, Device::Cpu);

    // all_reduce_sum: rank r holds [r+1, 10(r+1)] → [3, 30].
    let mut t = Tensor::from_slice(&[r + 1.0, 10.0 * (r + 1.0)]).to_kind(Kind::Float);
    pg.all_reduce_sum(&mut t).unwrap();
    assert_eq!(f32s(&t), vec![3.0, 30.0]);

    // all_reduce_mean on a (2,3) tensor.
    let mut t = Tensor::full([2, 3], r * 4.0, opts);
    pg.all_reduce_mean(&mut t).unwrap();
    assert_eq!(f32s(&t), vec![2.0; 6]);

    // broadcast from root 1, through a non-contiguous view (transposed).
    let base = Tensor::arange(6, opts).reshape([2, 3]) + 100.0 * r;
    let mut view = base.tr();
    assert!(!view.is_contiguous());
    pg.broadcast(&mut view, 1).unwrap();
    let expect: Vec<f64> = vec![100.0, 103.0, 101.0, 104.0, 102.0, 105.0];
    assert_eq!(f32s(&view), expect);
    assert_eq!(f32s(&base), (100..106).map(f64::from).collect::<Vec<_>>());

    pg.barrier().unwrap();

    // all_reduce_grads: mixed dtypes in one call, mean over ranks.
    let mut grads = vec![
        Tensor::full([3], r, opts),
        Tensor::full([2, 2], 2.0 * r, (Kind::Double, Device::Cpu)),
        Tensor::full([1], 4.0 * r + 1.0, opts),
    ];
    pg.all_reduce_grads(&mut grads).unwrap();
    assert_eq!(f32s(&grads[0]), vec![0.5; 3]);
    assert_eq!(f32s(&grads[1]), vec![1.0; 4]);
    assert_eq!(f32s(&grads[2]), vec![3.0]);
    assert_eq!(grads[1].kind(), Kind::Double);
    assert_eq!(grads[1].size(), vec![2, 2]);

    // broadcast_params: leaves that require grad take rank 0's values, keep requires_grad.
    let mut params = vec![
        Tensor::full([2], 1.0 + r, opts).set_requires_grad(true),
        Tensor::full([3, 1], -1.0 - r, opts).set_requires_grad(true),
    ];
    pg.broadcast_params(&mut params).unwrap();
    assert_eq!(f32s(&params[0]), vec![1.0, 1.0]);
    assert_eq!(f32s(&params[1]), vec![-1.0; 3]);
    assert!(params[0].requires_grad());

    // Errors that never reach the wire.
    let err = pg
        .broadcast(&mut Tensor::zeros([1], opts), 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("root 2"), "{err}");
    let err = pg
        .all_reduce_grads(&mut [Tensor::new()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("undefined"), "{err}");

    // A rank's shard of 7 examples.
    assert_eq!(pg.shard_range(7), if w.rank == 0 { 0..4 } else { 4..7 });
    pg.barrier().unwrap();
}
