//! The `frozen` diagnostic arm on the real tiny plugin: the meta step is measured and logged,
//! φ never moves, and so the learner's trajectory ignores the feedback set (DESIGN §1).

use tch::{Kind, Tensor};
use vpt_host::{
    config::{apply_overrides, RunConfig},
    loader::{Plugins, SearchPath},
    report::Record,
    train::Session,
};
use vpt_integration::tiny_plugin;

fn session(overrides: &[String]) -> Session {
    tch::set_num_threads(1);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tiny.toml");
    let mut doc: toml::Value = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    apply_overrides(&mut doc, overrides).unwrap();
    let mut plugins = Plugins::discover(&SearchPath::only(&[tiny_plugin()]));
    Session::build(RunConfig::from_toml(doc).unwrap(), &mut plugins).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.detach().to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

/// θ and φ after 20 steps, and how many train records carried a finite meta value.
fn run(estimator: &str, feedback_seed: u64) -> (Vec<Vec<f64>>, Vec<Vec<f64>>, usize) {
    let mut s = session(&[
        format!("meta.estimator={estimator}"),
        format!("task.config.feedback_seed={feedback_seed}"),
        "designer_optim.lr=1e-2".into(),
    ]);
    let phi0: Vec<Vec<f64>> = s.phi().tensors().map(values).collect();
    let mut metas = 0;
    for _ in 0..20 {
        if let Record::Train(t) = s.train_step().unwrap() {
            metas += t.meta.is_some_and(|m| m.value.is_finite()) as usize;
        }
    }
    let phi: Vec<Vec<f64>> = s.phi().tensors().map(values).collect();
    if estimator == "frozen" {
        assert_eq!(phi, phi0, "frozen: φ moved");
    } else {
        assert_ne!(phi, phi0, "exact: φ did not move");
    }
    (s.theta().tensors().map(values).collect(), phi, metas)
}

#[test]
fn frozen_logs_meta_steps_but_never_moves_phi_or_listens_to_feedback() {
    let (theta_a, _, metas) = run("frozen", 1);
    assert!(metas > 0, "frozen logs its meta steps");
    let (theta_b, _, _) = run("frozen", 7);
    assert_eq!(theta_a, theta_b, "frozen: θ depends on the feedback set");
    // The control: with φ learning, the feedback set changes θ (so the check can fail).
    assert_ne!(run("exact", 1).0, run("exact", 7).0);
}
