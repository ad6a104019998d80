//! Tests of the harness on a closed-form quadratic task (θ = w, ℓ_i = ½(x_i·w − t_i)²) and small
//! designers, each sound or broken in one known way.

use super::*;
use crate::rng::{SplitMix64, GOLDEN_GAMMA};
use crate::{
    Batch, BatchSource, Construction, Designer, Differentiation, FeedbackSetInfo, Forward, Metrics,
    PretrainLoss, State, Task, TaskInfo, TensorMap, KIND_EXAMPLE_WEIGHTS,
};

const D: i64 = 3;
const B: i64 = 8;
const KIND_TARGETS: &str = "quad.targets/v1";
/// The kinds the quadratic task consumes.
const QUAD_KINDS: &[crate::KindSpec] = &[TARGETS];
/// The quadratic task's one kind: a target per example.
const TARGETS: crate::KindSpec = crate::KindSpec::new(KIND_TARGETS, TARGETS_TENSORS);
const TARGETS_TENSORS: &[crate::TensorSpec] = &[
    crate::TensorSpec::new(
        "targets",
        crate::Dtype::Float,
        "B",
        crate::Values::Any,
        "the target t_i of each example",
    )
    .differentiable(),
    crate::TensorSpec::new(
        "gate",
        crate::Dtype::Float,
        "B",
        crate::Values::UnitInterval,
        "a diagnostic gate (not used by the loss)",
    )
    .optional(),
];

/// One way the quadratic task breaks a contract.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    AttachedInputs,
    ScalarLoss,
    DetachedLoss,
    FeedbackMovesTheta,
    ForgetfulState,
    MissingMetric,
    UnknownAlignment,
    DetachedForward,
    AttachedSide,
}

fn uniform(stream: u64, i: u64) -> f64 {
    // One splitmix64 draw → [−1, 1)
    let state = stream.wrapping_mul(GOLDEN_GAMMA).wrapping_add(i);
    SplitMix64::new(state).uniform() * 2.0 - 1.0
}

fn inputs(stream: u64, cursor: u64) -> Tensor {
    let v: Vec<f64> = (0..(B * D) as u64)
        .map(|i| 2.0 * uniform(stream, cursor * 1000 + i))
        .collect();
    Tensor::from_slice(&v).reshape([B, D]) // (B, D)
}

struct Quad {
    w: Tensor,
    teacher: Tensor,
    cursors: [u64; 2],
    fault: Option<Fault>,
    /// The mean of the side output `loss` that the last `after_step` received.
    side_seen: Option<f64>,
}

impl Quad {
    fn new(fault: Option<Fault>) -> Quad {
        tch::set_num_threads(1);
        let w = Tensor::from_slice(&[0.3, -0.2, 0.5]).set_requires_grad(true);
        Quad {
            w,
            teacher: Tensor::from_slice(&[1.0, -1.0, 2.0]),
            side_seen: None,
            cursors: [0, 0],
            fault,
        }
    }
    fn is(&self, f: Fault) -> bool {
        self.fault == Some(f)
    }
    fn per_example(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let r = x.matmul(&self.w) - t; // (B,)
        &r * &r * 0.5
    }
    /// ½(pred − t)² per example, t the construction's targets or the batch's.
    fn loss_of_prediction(&self, batch: &Batch, pred: &Tensor, c: &Construction) -> Result<Tensor> {
        let t = if c.is_baseline() {
            batch.tensors.require("y")?
        } else {
            c.tensors.require("targets")?
        };
        let r = pred - t;
        let l = &r * &r * 0.5;
        Ok(match self.fault {
            Some(Fault::ScalarLoss) => l.mean(Kind::Double),
            Some(Fault::DetachedLoss) => l.detach(),
            _ => l,
        })
    }
}

impl Task for Quad {
    fn info(&self) -> TaskInfo {
        TaskInfo {
            alignment: vec![if self.is(Fault::UnknownAlignment) {
                "v"
            } else {
                "w"
            }
            .into()],
            domains: vec!["main".into()],
            feedback_sets: vec![FeedbackSetInfo {
                name: "clean".into(),
                domain: 0,
            }],
            designer_context: serde_json::json!({ "feature_dim": D }),
            batch_size: B as usize,
        }
    }
    fn parameters(&self) -> Result<TensorMap> {
        Ok(TensorMap::new().with("w", self.w.shallow_clone()))
    }
    fn next_batch(&mut self, source: BatchSource) -> Result<Batch> {
        let (slot, stream) = match source {
            BatchSource::Unlabeled { .. } => (0, 1),
            BatchSource::Feedback { .. } => (1, 2),
        };
        let x = inputs(stream, self.cursors[slot]);
        self.cursors[slot] += 1;
        // pretext targets are biased in x₀; feedback targets are the teacher's
        let y = match source {
            BatchSource::Unlabeled { .. } => x.matmul(&self.teacher) + x.select(1, 0) * 0.5,
            BatchSource::Feedback { .. } => x.matmul(&self.teacher),
        };
        Ok(Batch {
            source,
            tensors: TensorMap::new().with("x", x).with("y", y),
        })
    }
    fn design_inputs(&mut self, batch: &Batch) -> Result<TensorMap> {
        let x = batch.tensors.require("x")?;
        let x = if self.is(Fault::AttachedInputs) {
            x * self.w.sum(Kind::Double)
        } else {
            x.detach()
        };
        Ok(TensorMap::new().with("example_features", x))
    }
    fn pretrain_loss(
        &mut self,
        batch: &Batch,
        c: &Construction,
        _diff: Differentiation,
    ) -> Result<Tensor> {
        let pred = batch.tensors.require("x")?.matmul(&self.w);
        self.loss_of_prediction(batch, &pred, c)
    }
    /// The forward is the prediction x·w (B,), kept attached for the loss.
    fn pretrain_forward(&mut self, batch: &Batch) -> Result<Forward> {
        let pred = batch.tensors.require("x")?.matmul(&self.w);
        let pred = if self.is(Fault::DetachedForward) {
            pred.detach()
        } else {
            pred
        };
        Ok(Forward {
            design_inputs: self.design_inputs(batch)?,
            state: TensorMap::new().with("pred", pred),
        })
    }
    fn pretrain_loss_from_forward(
        &mut self,
        batch: &Batch,
        state: &TensorMap,
        c: &Construction,
        diff: Differentiation,
    ) -> Result<PretrainLoss> {
        let loss = match state.get("pred") {
            Some(pred) => self.loss_of_prediction(batch, pred, c)?,
            None => self.pretrain_loss(batch, c, diff)?,
        };
        // the side output: the loss itself (detached, as the contract asks)
        let side = match self.is(Fault::AttachedSide) {
            true => loss.shallow_clone(),
            false => loss.detach(),
        };
        Ok(PretrainLoss {
            per_example: loss,
            side: TensorMap::new().with("loss", side),
        })
    }
    fn after_step(&mut self, _step: u64, side: &[TensorMap]) -> Result<Metrics> {
        let [one] = side else {
            return Err(crate::Error::msg(format!(
                "{} side maps, expected 1",
                side.len()
            )));
        };
        self.side_seen = Some(
            one.require("loss")?
                .f_mean(Kind::Double)?
                .f_double_value(&[])?,
        );
        Ok(Metrics::new())
    }
    fn feedback_loss(&mut self, batch: &Batch) -> Result<Tensor> {
        if self.is(Fault::FeedbackMovesTheta) {
            let _ = tch::no_grad(|| self.w.shallow_clone().f_add_scalar_(0.01))?;
        }
        let l = self.per_example(batch.tensors.require("x")?, batch.tensors.require("y")?);
        Ok(l.mean(Kind::Double))
    }
    fn evaluate(&mut self, _limit: Option<u64>) -> Result<Metrics> {
        let fb = self.next_batch(BatchSource::Feedback { set: 0 })?;
        let mut m = Metrics::new();
        m.insert(
            "feedback_loss".into(),
            self.feedback_loss(&fb)?.double_value(&[]),
        );
        if !self.is(Fault::MissingMetric) {
            m.insert("general_loss".into(), 0.5);
        }
        Ok(m)
    }
    fn state(&self) -> Result<State> {
        let json = if self.is(Fault::ForgetfulState) {
            serde_json::json!({})
        } else {
            serde_json::json!(self.cursors)
        };
        Ok(State {
            json,
            tensors: TensorMap::new(),
        })
    }
    fn load_state(&mut self, state: State) -> Result<()> {
        if let Ok(c) = serde_json::from_value::<[u64; 2]>(state.json) {
            self.cursors = c;
        }
        Ok(())
    }
}

/// Designers for the quadratic task.
#[derive(Clone, Copy, PartialEq)]
enum Style {
    /// targets t = x·a.
    Targets,
    /// weights w = B·softmax(x·a).
    Weights,
    /// t = x·a in value, but a gradient twice the true one.
    WrongGradient,
    /// weights = x·a: can be negative, mean not 1.
    RawWeights,
    /// t = Σ_j x_j, no φ.
    Fixed,
    /// t = x·a detached, with a gate σ(x·a) that does depend on φ: only the gate reaches φ.
    DetachedTargets,
}

struct Lin {
    a: Tensor,
    style: Style,
}

impl Lin {
    fn new(style: Style) -> Lin {
        Lin {
            a: Tensor::from_slice(&[0.4, 0.1, -0.3]).set_requires_grad(true),
            style,
        }
    }
}

impl Designer for Lin {
    fn parameters(&self) -> Result<TensorMap> {
        Ok(match self.style {
            Style::Fixed => TensorMap::new(),
            _ => TensorMap::new().with("a", self.a.shallow_clone()),
        })
    }
    fn construct(&mut self, inputs: &TensorMap) -> Result<Construction> {
        let x = inputs.require("example_features")?;
        let s = x.matmul(&self.a); // (B,)
        if self.style == Style::DetachedTargets {
            return Ok(Construction {
                kind: KIND_TARGETS.into(),
                tensors: TensorMap::new()
                    .with("targets", s.detach())
                    .with("gate", s.sigmoid()),
            });
        }
        let (kind, name, t) = match self.style {
            Style::Targets => (KIND_TARGETS, "targets", s),
            Style::Weights => (
                KIND_EXAMPLE_WEIGHTS,
                "weights",
                s.softmax(0, Kind::Double) * x.size()[0] as f64,
            ),
            Style::WrongGradient => {
                let doubled = &s * 2.0;
                (
                    KIND_TARGETS,
                    "targets",
                    s.detach() + &doubled - doubled.detach(),
                )
            }
            Style::RawWeights => (KIND_EXAMPLE_WEIGHTS, "weights", s),
            Style::Fixed => (
                KIND_TARGETS,
                "targets",
                x.sum_dim_intlist(1, false, Kind::Double),
            ),
            Style::DetachedTargets => unreachable!("returned above"),
        };
        Ok(Construction {
            kind: kind.into(),
            tensors: TensorMap::new().with(name, t),
        })
    }
}

fn invariants(task: &mut Quad, designer: Option<&mut Lin>) -> Report {
    let d = designer.map(|d| d as &mut dyn Designer);
    check_invariants(task, d, &InvariantOptions::consuming(&[TARGETS]))
}

#[test]
fn sound_task_and_designers_pass_every_check() {
    for style in [Style::Targets, Style::Weights] {
        let (mut task, mut d) = (Quad::new(None), Lin::new(style));
        let r = invariants(&mut task, Some(&mut d));
        r.assert_passed();
        assert!(
            r.checks
                .iter()
                .filter(|c| c.outcome == Outcome::Pass)
                .count()
                >= 12,
            "{r}"
        );
        let h = check_hypergradient(&mut task, &mut d, 1e-6, 1e-6);
        h.assert_passed();
        // a (3,): its largest coordinate and one other
        assert_eq!(
            h.checks
                .iter()
                .filter(|c| c.name.starts_with("∂V/∂a["))
                .count(),
            2,
            "{h}"
        );
    }
}

#[test]
fn a_wrong_hypergradient_is_caught() {
    let (mut task, mut d) = (Quad::new(None), Lin::new(Style::WrongGradient));
    let h = check_hypergradient(&mut task, &mut d, 1e-6, 1e-4);
    assert!(!h.passed(), "{h}");
    // only the coordinates fail: V itself is right, its gradient is not
    assert!(
        h.failures().iter().all(|c| c.name.starts_with("∂V/∂a[")),
        "{h}"
    );
}

#[test]
fn each_broken_contract_fails_its_own_check() {
    let cases = [
        (Fault::AttachedInputs, "design_inputs"),
        (Fault::ScalarLoss, "pretrain_loss (baseline)"),
        (Fault::DetachedLoss, "pretrain_loss (baseline)"),
        (Fault::FeedbackMovesTheta, "feedback_loss"),
        (Fault::ForgetfulState, "state round trip"),
        (Fault::MissingMetric, "evaluate"),
        (Fault::UnknownAlignment, "parameters"),
        (Fault::DetachedForward, "pretrain_forward"),
        (Fault::AttachedSide, "pretrain_forward"),
    ];
    let sound = invariants(&mut Quad::new(None), Some(&mut Lin::new(Style::Targets)));
    for (fault, check) in cases {
        assert_eq!(sound.get(check).unwrap().outcome, Outcome::Pass, "{sound}");
        let r = invariants(
            &mut Quad::new(Some(fault)),
            Some(&mut Lin::new(Style::Targets)),
        );
        let c = r
            .get(check)
            .unwrap_or_else(|| panic!("{fault:?}: no check `{check}` in\n{r}"));
        assert_eq!(
            c.outcome,
            Outcome::Fail,
            "{fault:?} should fail `{check}`:\n{r}"
        );
    }
    // The designer's faults: a tensor its kind declares differentiable is cut off from φ while
    // another tensor (a gate) still depends on φ; the failure names the cut-off tensor.
    assert_eq!(
        sound.get("designer construct").unwrap().outcome,
        Outcome::Pass,
        "{sound}"
    );
    let r = invariants(
        &mut Quad::new(None),
        Some(&mut Lin::new(Style::DetachedTargets)),
    );
    let c = r.get("designer construct").unwrap();
    assert_eq!(c.outcome, Outcome::Fail, "{r}");
    assert!(
        c.detail.contains("`targets` does not depend on φ") && !c.detail.contains("`gate`"),
        "{}",
        c.detail
    );
}

#[test]
fn bad_example_weights_and_fixed_designers_are_reported() {
    let r = invariants(&mut Quad::new(None), Some(&mut Lin::new(Style::RawWeights)));
    let c = r.get("designer construct").unwrap();
    assert_eq!(c.outcome, Outcome::Fail, "{r}");
    assert!(c.detail.contains("mean 1"), "{}", c.detail);

    let mut fixed = Lin::new(Style::Fixed);
    let r = invariants(&mut Quad::new(None), Some(&mut fixed));
    r.assert_passed();
    assert_eq!(r.get("designer parameters").unwrap().outcome, Outcome::Skip);
    let h = check_hypergradient(&mut Quad::new(None), &mut fixed, 1e-6, 1e-6);
    assert!(
        !h.passed() && h.get("setup").unwrap().detail.contains("no parameters"),
        "{h}"
    );

    let r = invariants(&mut Quad::new(None), None);
    r.assert_passed();
    assert_eq!(r.get("designer").unwrap().outcome, Outcome::Skip);
}

#[test]
fn the_learner_steps_side_outputs_reach_after_step() {
    let mut task = Quad::new(None);
    let b = task
        .next_batch(BatchSource::Unlabeled { domain: 0 })
        .unwrap();
    let per = task
        .pretrain_loss(&b, &Construction::baseline(), Differentiation::Once)
        .unwrap()
        .mean(Kind::Double)
        .double_value(&[]);
    let l = sgd_step(&mut task, &b, &Construction::baseline(), 0.1, 0).unwrap();
    assert!((l - per).abs() < 1e-12, "{l} vs {per}");
    assert_eq!(
        task.side_seen,
        Some(per),
        "after_step saw the loss's side output"
    );
}

#[test]
fn pretrain_objective_weights_the_baseline_losses_like_the_host() {
    let mut task = Quad::new(None);
    let b = task
        .next_batch(BatchSource::Unlabeled { domain: 0 })
        .unwrap();
    let w = Tensor::from_slice(&[0.0, 2.0, 1.0, 1.0, 0.5, 1.5, 1.0, 1.0]);
    let c = Construction {
        kind: KIND_EXAMPLE_WEIGHTS.into(),
        tensors: TensorMap::new().with("weights", w.shallow_clone()),
    };
    let got = pretrain_objective(&mut task, &b, &TensorMap::new(), &c, Differentiation::Once)
        .unwrap()
        .loss
        .double_value(&[]);
    let per = task
        .pretrain_loss(&b, &Construction::baseline(), Differentiation::Once)
        .unwrap();
    let want = (per * w).mean(Kind::Double).double_value(&[]);
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
}

#[test]
fn the_report_reads_as_one_line_per_check() {
    let r = invariants(&mut Quad::new(Some(Fault::ScalarLoss)), None);
    let text = r.to_string();
    assert!(text.starts_with("invariants: "), "{text}");
    assert!(
        text.contains(
            "FAIL pretrain_loss (baseline): shape [] , expected"
                .replace(" ,", ",")
                .as_str()
        ),
        "{text}"
    );
    assert_eq!(text.lines().count(), r.checks.len() + 1);
    let e = std::panic::catch_unwind(|| r.assert_passed()).unwrap_err();
    assert!(panic_message(&e).contains("FAIL"));
}

/// The quadratic task and a designer exported through the FFI glue (`TaskExport`,
/// `DesignerExport` → vtables) and read back through the foreign wrappers (`ForeignTask`,
/// `ForeignDesigner`), as a host sees a plugin: every contract still holds across the boundary
/// (tensors, graphs, errors, state), the hypergradient matches finite differences, and the glue
/// refuses a construction of a kind the task does not consume.
#[test]
fn contracts_hold_through_the_ffi_round_trip() {
    use crate::ffi::{designer::DesignerExport, task::TaskExport};
    use crate::foreign::{ForeignDesigner, ForeignTask};
    use tch::Device;
    let export = |style| {
        let t = TaskExport::new("quad", Box::new(Quad::new(None)), QUAD_KINDS).into_box();
        let d = DesignerExport::new("lin", Box::new(Lin::new(style))).into_box();
        (
            ForeignTask::new(t).unwrap(),
            ForeignDesigner::new(d).unwrap(),
        )
    };
    for style in [Style::Targets, Style::Weights] {
        let (mut task, mut d) = export(style);
        check_invariants(
            &mut task,
            Some(&mut d),
            &InvariantOptions::consuming(QUAD_KINDS),
        )
        .assert_passed();
        check_hypergradient(&mut task, &mut d, 1e-6, 1e-6).assert_passed();
    }
    let (mut task, _) = export(Style::Targets);
    let batch = task
        .next_batch(BatchSource::Unlabeled { domain: 0 })
        .unwrap();
    let other = Construction {
        kind: "quad.other/v1".into(),
        tensors: TensorMap::new().with("targets", Tensor::zeros([B], (Kind::Double, Device::Cpu))),
    };
    let e = task
        .pretrain_loss(&batch, &other, Differentiation::Once)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("plugin `quad`") && e.contains("not one this task consumes ([quad.targets/v1]"),
        "{e}"
    );
    // A broken task stays broken through the boundary: the harness sees the same failure.
    let t = TaskExport::new(
        "quad",
        Box::new(Quad::new(Some(Fault::ScalarLoss))),
        QUAD_KINDS,
    );
    let mut task = ForeignTask::new(t.into_box()).unwrap();
    let r = check_invariants(&mut task, None, &InvariantOptions::consuming(QUAD_KINDS));
    assert_eq!(
        r.get("pretrain_loss (baseline)").unwrap().outcome,
        Outcome::Fail,
        "{r}"
    );
}

#[test]
fn a_plugin_not_on_the_search_path_is_named_with_the_path() {
    let err = plugin_on("nope", "/no/such/dir:/no/such/file.so")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no plugin `nope` on VPT_PLUGIN_PATH (`/no/such/dir:/no/such/file.so`)")
            && err.contains("/no/such/file.so ("),
        "{err}"
    );
}
