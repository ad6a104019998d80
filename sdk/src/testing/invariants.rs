//! [`check_invariants`]: the Task/Designer contracts the host relies on, one check each.

use super::{
    abs_max, alignment_subset, all_finite, copy, dot, grad, pretrain_objective, verdict, Outcome,
    Report, Verdict, SEED,
};
use crate::{
    kinds, Batch, BatchSource, ComponentManifest, Construction, Designer, Differentiation, Error,
    KindSpec, MetaBatch, Result, Task, TensorMap, TensorSpec, KIND_EXAMPLE_WEIGHTS,
};
use tch::{Device, Kind, Tensor};

fn same_tensors(a: &TensorMap, b: &TensorMap) -> Result<std::result::Result<(), String>> {
    if a.names() != b.names() {
        return Ok(Err(format!(
            "tensor names differ: {:?} vs {:?}",
            a.names(),
            b.names()
        )));
    }
    for ((name, x), (_, y)) in a.iter().zip(b.iter()) {
        if x.size() != y.size()
            || x.kind() != y.kind()
            || !x.f_equal(&y.f_to_device(x.device())?)?
        {
            return Ok(Err(format!("tensor `{name}` differs")));
        }
    }
    Ok(Ok(()))
}

/// Options of [`check_invariants`].
#[derive(Debug, Clone)]
pub struct InvariantOptions {
    /// Also call `evaluate` and check the required metrics (can be slow for large tasks).
    pub evaluate: bool,
    /// The `limit` passed to `evaluate`.
    pub eval_limit: Option<u64>,
    /// The kinds the task consumes (its manifest's `kind_specs`, see [`Self::for_task`]): a
    /// designer's construction must be of one of them (or example weights) and meet its spec.
    pub consumes: Vec<KindSpec>,
    /// The task's declared design inputs (its manifest's `design_inputs`); when not empty,
    /// `design_inputs` must match them.
    pub design_inputs: Vec<TensorSpec>,
}

impl Default for InvariantOptions {
    fn default() -> Self {
        InvariantOptions {
            evaluate: true,
            eval_limit: Some(32),
            consumes: Vec::new(),
            design_inputs: Vec::new(),
        }
    }
}

impl InvariantOptions {
    /// The defaults, for a task consuming `kinds`.
    pub fn consuming(kinds: &[KindSpec]) -> Self {
        InvariantOptions {
            consumes: kinds.to_vec(),
            ..Default::default()
        }
    }
    /// The defaults, for the task of manifest entry `task` (`TaskEntry::manifest()`, or a
    /// loaded plugin's `manifest.tasks[i]`): its kinds and design inputs.
    pub fn for_task(task: &ComponentManifest) -> Self {
        InvariantOptions {
            consumes: task.kind_specs.clone(),
            design_inputs: task.design_inputs.clone(),
            ..Default::default()
        }
    }
}

/// Checks the contracts of `task` (and of `designer`, when given) that the host relies on:
///
/// - `info`: at least one domain and feedback set, a non-empty alignment subset S, B > 0;
/// - `parameters`: θ are leaf tensors with `requires_grad`; S's names are among them;
/// - `state round trip`: `state()`, two batches, `load_state()`, the same two batches again;
/// - `design_inputs`: detached from θ (checked with grad mode on) and as declared
///   ([`InvariantOptions::design_inputs`], when given); `example_features`, when
///   present, is (B, F) with F = `designer_context.feature_dim`;
/// - `pretrain_loss (baseline)`: shape (B,), finite, differentiable in θ_S;
/// - `pretrain_forward`: design inputs detached and named as `design_inputs`'; the loss from
///   the forward equals `pretrain_loss` (value and ∇_S, torch reseeded before each);
/// - `meta_batch`: the slice has the rows asked for, and its loss from the sliced forward
///   equals `pretrain_loss` of the sliced batch under [`Differentiation::Twice`];
/// - `pretrain_loss double backward`: ∂/∂c of g·∇_S L_pre(θ; c) exists through the meta
///   step's path (meta slice, forward state, `Twice`; CPU `scaled_dot_product_attention`, for
///   one, has no double backward);
/// - `feedback_loss`: a finite scalar, differentiable in θ_S, and θ unchanged by the call;
/// - `designer …` (when given): φ are leaves, the construction's kind is one the task consumes
///   ([`InvariantOptions::consumes`]) or example weights, it meets that kind's spec
///   ([`KindSpec::check`]: names, dtypes, shapes, value constraints; example weights are also
///   (B,)), every tensor the kind declares differentiable depends on φ (the failure names
///   the tensor), the regulariser is absent or a finite scalar;
/// - `evaluate` (unless disabled): `feedback_loss` and `general_loss` present and finite.
///
/// Every check runs even when an earlier one failed, except those that need its result.
pub fn check_invariants(
    task: &mut dyn Task,
    mut designer: Option<&mut dyn Designer>,
    opts: &InvariantOptions,
) -> Report {
    let mut r = Report::new("invariants");
    let info = task.info();
    let b = info.batch_size as i64;

    r.run("info", || {
        let mut bad = Vec::new();
        if info.domains.is_empty() {
            bad.push("no unlabeled domain".to_string());
        }
        if info.feedback_sets.is_empty() {
            bad.push("no feedback set".into());
        }
        if info.alignment.is_empty() {
            bad.push("empty alignment subset S".into());
        }
        if info.batch_size == 0 {
            bad.push("batch_size is 0".into());
        }
        for f in &info.feedback_sets {
            if f.domain as usize >= info.domains.len() {
                bad.push(format!(
                    "feedback set `{}` pairs with domain {} of {}",
                    f.name,
                    f.domain,
                    info.domains.len()
                ));
            }
        }
        Ok(verdict(
            bad.is_empty(),
            format!(
                "{} domain(s), {} feedback set(s), |S| = {} tensors, B = {b}",
                info.domains.len(),
                info.feedback_sets.len(),
                info.alignment.len()
            ),
            bad.join("; "),
        ))
    });

    r.run("parameters", || {
        let theta = task.parameters()?;
        if theta.is_empty() {
            return Ok(Verdict::Fail("θ is empty".into()));
        }
        let bad: Vec<String> = theta
            .iter()
            .filter_map(|(n, t)| match (t.is_leaf(), t.requires_grad()) {
                (true, true) => None,
                (false, _) => Some(format!(
                    "`{n}` is not a leaf (return the VarStore's variables, not a computed tensor)"
                )),
                (true, false) => Some(format!("`{n}` does not require grad (the host ignores it)")),
            })
            .collect();
        let missing: Vec<String> = info
            .alignment
            .iter()
            .filter(|n| theta.get(n).is_none())
            .map(|n| format!("alignment name `{n}` is not a parameter"))
            .collect();
        let all: Vec<String> = bad.into_iter().chain(missing).collect();
        let numel: i64 = theta.tensors().map(Tensor::numel).map(|n| n as i64).sum();
        Ok(verdict(
            all.is_empty(),
            format!("{} tensors, {numel} values, S ⊂ θ", theta.len()),
            all.join("; "),
        ))
    });

    r.run("state round trip", || {
        let state = task.state()?;
        let draw = |task: &mut dyn Task| -> Result<(Batch, Batch)> {
            tch::manual_seed(SEED);
            Ok((
                task.next_batch(BatchSource::Unlabeled { domain: 0 })?,
                task.next_batch(BatchSource::Feedback { set: 0 })?,
            ))
        };
        let (u1, f1) = draw(task)?;
        task.load_state(state)?;
        let (u2, f2) = draw(task)?;
        if let Err(e) = same_tensors(&u1.tensors, &u2.tensors)? {
            return Ok(Verdict::Fail(format!(
                "unlabeled batch after load_state: {e} (save every data cursor in state())"
            )));
        }
        if let Err(e) = same_tensors(&f1.tensors, &f2.tensors)? {
            return Ok(Verdict::Fail(format!(
                "feedback batch after load_state: {e} (save every data cursor in state())"
            )));
        }
        Ok(Verdict::Pass(
            "load_state(state()) reproduces the next unlabeled and feedback batches".into(),
        ))
    });

    // One unlabeled batch shared by the checks below.
    let batch = match task.next_batch(BatchSource::Unlabeled { domain: 0 }) {
        Ok(b) => b,
        Err(e) => {
            r.push("next_batch", Outcome::Fail, format!("error: {e}"));
            return r;
        }
    };

    let mut inputs = None;
    r.run("design_inputs", || {
        let x = task.design_inputs(&batch)?; // grad mode on: a leak of θ's graph shows here
        let attached: Vec<&str> = x
            .iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(n, _)| n)
            .collect();
        let shapes: Vec<String> = x
            .iter()
            .map(|(n, t)| format!("{n} {:?}", t.size()))
            .collect();
        inputs = Some(x.detached());
        if !opts.design_inputs.is_empty() {
            if let Err(e) = kinds::check_tensors(&opts.design_inputs, &x) {
                return Ok(Verdict::Fail(format!(
                    "not as declared (DESIGN_INPUTS): {e}"
                )));
            }
        }
        Ok(verdict(
            attached.is_empty(),
            shapes.join(", "),
            format!(
                "{} require grad: detach design inputs from θ",
                attached.join(", ")
            ),
        ))
    });

    r.run("example_features", || {
        let Some(x) = inputs.as_ref().and_then(|i| i.get("example_features")) else {
            return Ok(Verdict::Skip(
                "absent: designers of any.example_weights/v1 (e.g. `reweight`) cannot score this task's examples".into(),
            ));
        };
        let size = x.size();
        let f = info.designer_context.get("feature_dim").and_then(|v| v.as_i64());
        let ok_shape = size.len() == 2 && size[0] == b && f.is_none_or(|f| size[1] == f);
        let ok = ok_shape && x.is_floating_point() && all_finite(x)?;
        Ok(verdict(
            ok && f.is_some(),
            format!("{size:?}, designer_context.feature_dim = {}", f.unwrap_or(-1)),
            format!(
                "got {size:?} ({:?}); expected (B = {b}, F) floating and finite, with designer_context.feature_dim = F (it is {f:?})",
                x.kind()
            ),
        ))
    });

    let s = alignment_subset(task);
    r.run("pretrain_loss (baseline)", || {
        let s = s.as_ref().map_err(|e| Error::msg(e.to_string()))?;
        let l = task.pretrain_loss(&batch, &Construction::baseline(), Differentiation::Once)?;
        if l.size() != [b] {
            return Ok(Verdict::Fail(format!(
                "shape {:?}, expected (B,) = [{b}]: return one loss per example, not the mean",
                l.size()
            )));
        }
        if !l.is_floating_point() || !all_finite(&l)? {
            return Ok(Verdict::Fail(format!(
                "not finite floating values ({:?})",
                l.kind()
            )));
        }
        if !l.requires_grad() {
            return Ok(Verdict::Fail(
                "does not require grad: it must be differentiable in θ".into(),
            ));
        }
        let g = grad(&l.f_mean(Kind::Double)?, s, false)?;
        let m = abs_max(&g)?;
        Ok(verdict(
            m > 0.0 && m.is_finite(),
            format!("(B,) = [{b}], {:?}, ‖∇_S mean‖∞ = {m:.3e}", l.kind()),
            format!("‖∇_S mean‖∞ = {m}: the loss does not reach θ_S"),
        ))
    });

    let mut forward_ok = false;
    r.run("pretrain_forward", || {
        let s = s.as_ref().map_err(|e| Error::msg(e.to_string()))?;
        tch::manual_seed(SEED);
        let f = task.pretrain_forward(&batch)?; // grad mode on, as in the host
        let attached: Vec<&str> = f
            .design_inputs
            .iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(n, _)| n)
            .collect();
        if !attached.is_empty() {
            return Ok(Verdict::Fail(format!(
                "design inputs {} require grad: detach them from θ",
                attached.join(", ")
            )));
        }
        if let Some(i) = inputs.as_ref() {
            if i.names() != f.design_inputs.names() {
                return Ok(Verdict::Fail(format!(
                    "design inputs {:?} differ from design_inputs' {:?}",
                    f.design_inputs.names(),
                    i.names()
                )));
            }
        }
        let base = Construction::baseline();
        tch::manual_seed(SEED);
        let direct = task.pretrain_loss(&batch, &base, Differentiation::Once)?;
        tch::manual_seed(SEED);
        let shared =
            task.pretrain_loss_from_forward(&batch, &f.state, &base, Differentiation::Once)?;
        if let Some((n, _)) = shared.side.iter().find(|(_, t)| t.requires_grad()) {
            return Ok(Verdict::Fail(format!(
                "side output `{n}` requires grad; side outputs must be detached"
            )));
        }
        let err = same_loss(&direct, &shared.per_example, s)?;
        forward_ok = true;
        Ok(verdict(
            err.is_none(),
            format!(
                "{} state tensors; loss and ∇_S equal pretrain_loss's",
                f.state.len()
            ),
            format!("from the forward: {}", err.unwrap_or_default()),
        ))
    });

    let rows = (b / 2).max(1) as usize;
    let mut meta_ok = false;
    r.run("meta_batch", || {
        let s = s.as_ref().map_err(|e| Error::msg(e.to_string()))?;
        if !forward_ok {
            return Ok(Verdict::Skip("no forward (pretrain_forward failed)".into()));
        }
        let (mb, mf) = meta_slice(task, &batch, rows)?;
        if mb.source != batch.source {
            return Ok(Verdict::Fail(format!(
                "source {:?}, expected {:?}",
                mb.source, batch.source
            )));
        }
        let base = Construction::baseline();
        tch::manual_seed(SEED);
        let direct = task.pretrain_loss(&mb, &base, Differentiation::Twice)?;
        tch::manual_seed(SEED);
        let shared = task
            .pretrain_loss_from_forward(&mb, &mf.state, &base, Differentiation::Twice)?
            .per_example;
        if shared.size() != [rows as i64] {
            return Ok(Verdict::Fail(format!(
                "loss of the slice has shape {:?}, expected [{rows}]",
                shared.size()
            )));
        }
        let err = same_loss(&direct, &shared, s)?;
        meta_ok = true;
        Ok(verdict(
            err.is_none(),
            format!(
                "{rows} of {b} rows; Twice loss and ∇_S from the forward equal pretrain_loss's"
            ),
            format!(
                "the slice's loss from its forward: {}",
                err.unwrap_or_default()
            ),
        ))
    });

    r.run("pretrain_loss double backward", || {
        let s = s.as_ref().map_err(|e| Error::msg(e.to_string()))?;
        if !meta_ok {
            return Ok(Verdict::Skip("no meta slice (meta_batch failed)".into()));
        }
        let (batch, f) = &meta_slice(task, &batch, rows)?;
        // The construction as leaves: the designer's (detached), or uniform example weights.
        let made = match designer.as_deref_mut() {
            Some(d) => tch::no_grad(|| d.construct(&f.design_inputs))?,
            _ => Construction {
                kind: KIND_EXAMPLE_WEIGHTS.into(),
                tensors: TensorMap::new().with("weights", Tensor::f_ones([rows as i64], (Kind::Double, s.first().map_or(Device::Cpu, Tensor::device)))?),
            },
        };
        let mut leaves = Vec::new();
        let mut c = Construction { kind: made.kind.clone(), tensors: TensorMap::new() };
        for (n, t) in made.tensors.iter() {
            let t = if t.is_floating_point() {
                let leaf = t.f_detach()?.f_set_requires_grad(true)?;
                leaves.push(leaf.shallow_clone());
                leaf
            } else {
                t.f_detach()?
            };
            c.tensors.insert(n, t);
        }
        if leaves.is_empty() {
            return Ok(Verdict::Skip(format!("construction `{}` has no floating tensor", c.kind)));
        }
        let l = pretrain_objective(task, batch, &f.state, &c, Differentiation::Twice)?.loss;
        let g_pre = grad(&l, s, true)?;
        tch::manual_seed(SEED);
        let direction: Vec<Tensor> = g_pre.iter().map(|g| g.f_randn_like()).collect::<std::result::Result<_, _>>()?;
        let v = dot(&direction, &g_pre)?;
        let g_c = grad(&v, &leaves, false).map_err(|e| {
            Error::msg(format!("{e} (an op without double backward? e.g. CPU scaled_dot_product_attention: use the math kernel)"))
        })?;
        let m = abs_max(&g_c)?;
        Ok(verdict(
            m > 0.0 && m.is_finite(),
            format!("kind `{}`: ‖∂(r·∇_S L_pre)/∂c‖∞ = {m:.3e}", c.kind),
            format!("kind `{}`: ‖∂(r·∇_S L_pre)/∂c‖∞ = {m}: L_pre's θ-gradient does not depend on the construction", c.kind),
        ))
    });

    r.run("feedback_loss", || {
        let s = s.as_ref().map_err(|e| Error::msg(e.to_string()))?;
        let before: Vec<Tensor> = s.iter().map(copy).collect::<Result<_>>()?;
        task.prepare_feedback()?;
        let fb = task.next_batch(BatchSource::Feedback { set: 0 })?;
        let l = task.feedback_loss(&fb)?;
        if l.dim() != 0 {
            return Ok(Verdict::Fail(format!(
                "shape {:?}: must be a scalar (0-dim)",
                l.size()
            )));
        }
        if !all_finite(&l)? || !l.requires_grad() {
            return Ok(Verdict::Fail(
                "must be finite and differentiable in θ".into(),
            ));
        }
        let m = abs_max(&grad(&l, s, false)?)?;
        for (x, y) in before.iter().zip(s) {
            if !x.f_equal(&y.f_detach()?)? {
                return Ok(Verdict::Fail(
                    "θ_S changed during prepare_feedback/feedback_loss: feedback must never move θ"
                        .into(),
                ));
            }
        }
        Ok(verdict(
            m > 0.0 && m.is_finite(),
            format!(
                "L_down = {:.4}, ‖∇_S‖∞ = {m:.3e}, θ_S unchanged",
                l.f_double_value(&[])?
            ),
            format!("‖∇_S L_down‖∞ = {m}: the feedback loss does not reach θ_S"),
        ))
    });

    match designer {
        None => r.push("designer", Outcome::Skip, "no designer given"),
        Some(d) => check_designer(&mut r, d, &opts.consumes, inputs.as_ref(), b),
    }

    if opts.evaluate {
        r.run("evaluate", || {
            let m = task.evaluate(opts.eval_limit)?;
            let missing: Vec<&str> = ["feedback_loss", "general_loss"]
                .into_iter()
                .filter(|k| !m.contains_key(*k))
                .collect();
            let bad: Vec<&String> = m
                .iter()
                .filter(|(_, v)| !v.is_finite())
                .map(|(k, _)| k)
                .collect();
            let shown: Vec<String> = m.iter().map(|(k, v)| format!("{k} = {v:.4}")).collect();
            Ok(verdict(
                missing.is_empty() && bad.is_empty(),
                shown.join(", "),
                format!("missing {missing:?}, not finite {bad:?}"),
            ))
        });
    } else {
        r.push("evaluate", Outcome::Skip, "disabled by InvariantOptions");
    }
    r
}

/// A fresh forward of `batch` (torch reseeded) and its meta slice of `rows` rows: each check
/// takes its own, since a backward consumes the graph a forward's state may hold.
fn meta_slice(task: &mut dyn Task, batch: &Batch, rows: usize) -> Result<(Batch, crate::Forward)> {
    tch::manual_seed(SEED);
    let f = task.pretrain_forward(batch)?;
    task.meta_batch(
        batch,
        &f,
        MetaBatch {
            rows,
            max_len: None,
        },
    )
}

/// `None` when two per-example losses agree in value and in ∇_S of their means (relative 1e-4),
/// else what differs.
fn same_loss(a: &Tensor, b: &Tensor, s: &[Tensor]) -> Result<Option<String>> {
    if a.size() != b.size() {
        return Ok(Some(format!("shape {:?} vs {:?}", b.size(), a.size())));
    }
    let close = |x: &Tensor, y: &Tensor| -> Result<bool> {
        let d = abs_max(&[x.f_sub(y)?])?;
        Ok(d <= 1e-4 * abs_max(&[x.shallow_clone()])?.max(1e-6))
    };
    if !close(&a.f_detach()?, &b.f_detach()?)? {
        return Ok(Some("values differ".into()));
    }
    let ga = grad(&a.f_mean(Kind::Double)?, s, false)?;
    let gb = grad(&b.f_mean(Kind::Double)?, s, false)?;
    for (x, y) in ga.iter().zip(&gb) {
        if !close(x, y)? {
            return Ok(Some("∇_S differs".into()));
        }
    }
    Ok(None)
}

fn check_designer(
    r: &mut Report,
    d: &mut dyn Designer,
    consumes: &[KindSpec],
    inputs: Option<&TensorMap>,
    b: i64,
) {
    let mut phi: Vec<Tensor> = Vec::new();
    r.run("designer parameters", || {
        let params = d.parameters()?;
        phi = params
            .tensors()
            .filter(|t| t.requires_grad())
            .map(Tensor::shallow_clone)
            .collect();
        let phi = params;
        if phi.is_empty() {
            return Ok(Verdict::Skip(
                "φ is empty: a fixed designer (a control)".into(),
            ));
        }
        let bad: Vec<&str> = phi
            .iter()
            .filter(|(_, t)| !(t.is_leaf() && t.requires_grad()))
            .map(|(n, _)| n)
            .collect();
        Ok(verdict(
            bad.is_empty(),
            format!("{} tensors", phi.len()),
            format!("{} are not leaves with requires_grad", bad.join(", ")),
        ))
    });
    let Some(inputs) = inputs else {
        r.push(
            "designer construct",
            Outcome::Skip,
            "no design inputs (design_inputs failed)",
        );
        return;
    };
    let mut made = None;
    r.run("designer construct", || {
        let c = d.construct(inputs)?;
        let weights = kinds::EXAMPLE_WEIGHTS;
        let spec = consumes
            .iter()
            .chain([&weights])
            .find(|k| k.name == c.kind);
        let Some(spec) = spec else {
            let names: Vec<&str> = consumes.iter().map(|k| k.name.as_ref()).collect();
            return Ok(Verdict::Fail(format!(
                "kind `{}`, but the task consumes only [{}] (and {KIND_EXAMPLE_WEIGHTS}); pass the task's kinds in InvariantOptions::consumes",
                c.kind,
                names.join(", ")
            )));
        };
        let mut bad = Vec::new();
        if let Err(e) = spec.check(&c) {
            bad.push(e.to_string());
        }
        if !phi.is_empty() {
            bad.extend(detached_from_phi(spec, &c, &phi)?);
        }
        if c.kind == KIND_EXAMPLE_WEIGHTS {
            let w = c.tensors.require("weights")?;
            if w.size() != [b] {
                bad.push(format!("weights {:?}: expected (B,) = [{b}]", w.size()));
            }
        }
        let detail = format!(
            "kind `{}` meets its spec: {}",
            c.kind,
            c.tensors.names().join(", ")
        );
        made = Some(c);
        Ok(verdict(bad.is_empty(), detail, bad.join("; ")))
    });
    if let Some(c) = made {
        r.run("designer regularizer", || match d.regularizer(&c)? {
            None => Ok(Verdict::Pass("none".into())),
            Some(t) => {
                let ok = t.dim() == 0 && all_finite(&t)?;
                Ok(verdict(
                    ok,
                    format!("R = {:.4e}", t.f_double_value(&[])?),
                    format!("shape {:?}: must be a finite scalar", t.size()),
                ))
            }
        });
    }
}

/// What is wrong with how `c` depends on φ: each tensor its kind declares differentiable
/// ([`TensorSpec::differentiable`](crate::TensorSpec)) must reach φ's tensors through autograd;
/// a kind that declares none needs at least one tensor requiring grad.
fn detached_from_phi(spec: &KindSpec, c: &Construction, phi: &[Tensor]) -> Result<Vec<String>> {
    let declared: Vec<&TensorSpec> = spec.tensors.iter().filter(|t| t.differentiable).collect();
    if declared.is_empty() {
        if c.tensors.tensors().any(Tensor::requires_grad) {
            return Ok(Vec::new());
        }
        return Ok(vec![
            "no tensor depends on φ (was it built under no_grad, or detached?)".into(),
        ]);
    }
    let mut bad = Vec::new();
    for t in declared {
        let Some(x) = c.tensors.get(&t.name) else {
            continue; // an absent optional tensor; a missing required one failed the spec check
        };
        let why = if !x.requires_grad() {
            Some("requires_grad is false: it was detached, built under no_grad, or computed from the design inputs alone")
        } else {
            let y = x.f_sum(Kind::Double)?;
            let gs = Tensor::f_run_backward(&[y], phi, true, false)?;
            (!gs.iter().any(Tensor::defined))
                .then_some("its graph does not reach any of φ's tensors")
        };
        if let Some(why) = why {
            bad.push(format!(
                "`{}` does not depend on φ ({why}); kind `{}` declares it differentiable, so the \
                 meta step's ∇φ flows through it: compute it from φ without detach() or no_grad",
                t.name, spec.name
            ));
        }
    }
    Ok(bad)
}
