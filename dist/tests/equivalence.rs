//! Data-parallel equivalence on 2 loopback ranks: each rank works on its half of a batch, and
//! after the all-reduces the result equals one process on the combined batch — for the learner
//! step (SGD and Adam on a VarStore) and for the V-pretraining meta step of DESIGN §5 (g_down
//! all-reduced once, local dot with g_pre taken with create_graph, ∇φ all-reduced).
mod common;

use std::time::Duration;

use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};
use vpt_dist::{shard_range, Backend, ProcessGroup};

const TEST: &str = "data_parallel_equivalence";
const N: i64 = 8; // combined batch (4 per rank)
const D: i64 = 4; // input features
const TOL: f64 = 1e-6;

#[test]
fn data_parallel_equivalence() {
    if let Some(w) = common::worker(TEST) {
        return equivalence_worker(w);
    }
    let outcomes = common::spawn(TEST, 2, Duration::from_secs(90));
    common::assert_all_ok(TEST, &outcomes);
    for o in &outcomes {
        eprintln!("rank {}:\n{}", o.rank, o.output);
    }
}

/// Learner θ: a 2-layer MLP, f(x) = W2 tanh(W1 x + b1) + b2, in f64.
fn learner(seed: i64) -> (nn::VarStore, nn::Sequential) {
    tch::manual_seed(seed);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let net = nn::seq()
        .add(nn::linear(&root / "l1", D, 8, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(&root / "l2", 8, 1, Default::default()));
    vs.double();
    (vs, net)
}

/// Designer φ: per-example loss weights w = 2·sigmoid(x·a + b), shape (n,).
struct Designer {
    a: Tensor, // (D,)
    b: Tensor, // (1,)
}

impl Designer {
    fn new() -> Designer {
        tch::manual_seed(7);
        let opts = (Kind::Double, Device::Cpu);
        Designer {
            a: (Tensor::randn([D], opts) * 0.5).set_requires_grad(true),
            b: Tensor::zeros([1], opts).set_requires_grad(true),
        }
    }
    fn params(&self) -> Vec<Tensor> {
        vec![self.a.shallow_clone(), self.b.shallow_clone()]
    }
    fn construct(&self, x: &Tensor) -> Tensor {
        (x.matmul(&self.a) + &self.b).sigmoid() * 2.0 // (n,)
    }
}

/// Mean over examples of w_i (f(x_i) − y_i)²; `w = None` is the baseline recipe (all ones).
fn pretrain_loss(net: &nn::Sequential, x: &Tensor, y: &Tensor, w: Option<&Tensor>) -> Tensor {
    let err = (net.forward(x).squeeze_dim(1) - y).square(); // (n,)
    match w {
        Some(w) => (err * w).mean(Kind::Double),
        None => err.mean(Kind::Double),
    }
}

/// Deterministic data, identical on every rank: (unlabeled x, y) and (feedback x, y).
fn data() -> (Tensor, Tensor, Tensor, Tensor) {
    tch::manual_seed(1234);
    let opts = (Kind::Double, Device::Cpu);
    let xu = Tensor::randn([N, D], opts);
    let yu = xu
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Double)
        .sin();
    let xf = Tensor::randn([N, D], opts);
    let yf = xf.select(1, 0) - xf.select(1, 2);
    (xu, yu, xf, yf)
}

fn max_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

fn equivalence_worker(w: common::Worker) {
    tch::set_num_threads(1);
    let pg = ProcessGroup::from_env(Backend::Gloo, Duration::from_secs(30))
        .unwrap()
        .unwrap();
    let (xu, yu, xf, yf) = data();
    let mine = shard_range(N as usize, w.rank, w.world);
    let (lo, hi) = (mine.start as i64, mine.end as i64);
    let (xu_l, yu_l) = (xu.slice(0, lo, hi, 1), yu.slice(0, lo, hi, 1));
    let (xf_l, yf_l) = (xf.slice(0, lo, hi, 1), yf.slice(0, lo, hi, 1));

    // Ranks start from different seeds: broadcast_params must make θ identical.
    let (vs, net) = learner(100 + w.rank as i64);
    let mut theta = vs.trainable_variables();
    pg.broadcast_params(&mut theta).unwrap();
    // Single-process reference, computed on the combined batch by every rank, from the same θ₀.
    let (mut vs_ref, net_ref) = learner(999);
    vs_ref.copy(&vs).unwrap();

    // Learner steps: 2 SGD steps then 3 Adam steps, grads all-reduced with one collective.
    for (opt_name, steps) in [("sgd", 2), ("adam", 3)] {
        let mut opt = match opt_name {
            "sgd" => nn::Sgd::default().build(&vs, 0.1).unwrap(),
            _ => nn::Adam::default().build(&vs, 0.01).unwrap(),
        };
        let mut opt_ref = match opt_name {
            "sgd" => nn::Sgd::default().build(&vs_ref, 0.1).unwrap(),
            _ => nn::Adam::default().build(&vs_ref, 0.01).unwrap(),
        };
        for _ in 0..steps {
            opt.zero_grad();
            pretrain_loss(&net, &xu_l, &yu_l, None).backward();
            let mut grads: Vec<Tensor> =
                vs.trainable_variables().iter().map(Tensor::grad).collect();
            pg.all_reduce_grads(&mut grads).unwrap(); // writes through to each p.grad()
            opt.step();

            opt_ref.zero_grad();
            pretrain_loss(&net_ref, &xu, &yu, None).backward();
            opt_ref.step();
        }
        let d = max_diff(&vs.trainable_variables(), &vs_ref.trainable_variables());
        println!("{opt_name}: max |θ_dp − θ_single| = {d:.3e}");
        assert!(
            d < TOL,
            "{opt_name}: data-parallel θ differs from single-process by {d}"
        );
    }
    // Guard against a vacuous pass: a step without the all-reduce must differ.
    let theta_l: Vec<Tensor> = vs.trainable_variables();
    let g_local = Tensor::run_backward(
        &[pretrain_loss(&net, &xu_l, &yu_l, None)],
        &theta_l,
        false,
        false,
    );
    let g_full = Tensor::run_backward(
        &[pretrain_loss(&net_ref, &xu, &yu, None)],
        &vs_ref.trainable_variables(),
        false,
        false,
    );
    assert!(
        max_diff(&g_local, &g_full) > 1e-3,
        "shards too similar for the test to mean anything"
    );

    // Meta step (DESIGN §1 step 2, data-parallel form of §5). θ_S = all of θ.
    let designer = Designer::new();
    let phi = designer.params();
    let lambda = 0.1;
    let meta_grad =
        |net: &nn::Sequential, theta: &[Tensor], xu: &Tensor, yu: &Tensor, g_down: &[Tensor]| {
            // construct: c differentiable in φ
            let c = designer.construct(xu);
            // g_pre with create_graph so that V can be differentiated w.r.t. φ
            let g_pre =
                Tensor::run_backward(&[pretrain_loss(net, xu, yu, Some(&c))], theta, true, true);
            // align: V = g_downᵀ g_pre; L_meta = −V + λ·mean((c − 1)²)
            let v = g_down
                .iter()
                .zip(&g_pre)
                .map(|(a, b)| (a * b).sum(Kind::Double))
                .fold(Tensor::from(0.0f64), |s, t| s + t);
            let l_meta = -v + (c - 1.0).square().mean(Kind::Double) * lambda;
            Tensor::run_backward(&[l_meta], &phi, false, false)
        };

    // Data-parallel: g_down on the local feedback shard, all-reduced (mean) once, detached.
    let mut g_down = Tensor::run_backward(
        &[pretrain_loss(&net, &xf_l, &yf_l, None)],
        &theta_l,
        false,
        false,
    );
    pg.all_reduce_grads(&mut g_down).unwrap();
    let mut grad_phi = meta_grad(&net, &theta_l, &xu_l, &yu_l, &g_down);
    pg.all_reduce_grads(&mut grad_phi).unwrap();

    // Single process on the combined batches.
    let theta_r = vs_ref.trainable_variables();
    let g_down_ref = Tensor::run_backward(
        &[pretrain_loss(&net_ref, &xf, &yf, None)],
        &theta_r,
        false,
        false,
    );
    let grad_phi_ref = meta_grad(&net_ref, &theta_r, &xu, &yu, &g_down_ref);

    let d_down = max_diff(&g_down, &g_down_ref);
    let d_phi = max_diff(&grad_phi, &grad_phi_ref);
    let norm = grad_phi_ref
        .iter()
        .map(|g| g.norm().double_value(&[]))
        .fold(0.0, f64::max);
    println!(
        "meta: max |g_down diff| = {d_down:.3e}, max |∇φ diff| = {d_phi:.3e} (|∇φ| = {norm:.3e})"
    );
    assert!(d_down < TOL, "g_down differs by {d_down}");
    assert!(d_phi < TOL, "∇φ differs by {d_phi}");
    assert!(
        norm > 1e-4,
        "∇φ is ~0, the meta comparison would be vacuous"
    );
    pg.barrier().unwrap();
}
