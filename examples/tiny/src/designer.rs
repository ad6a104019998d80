//! The `tiny_soft` designer: per-example soft targets q = (1−α)·onehot(ỹ) + α·softmax(s),
//! with s and α from a small MLP over (x, onehot ỹ).

use crate::task::KIND_TINY_SOFT_TARGETS;
use schemars::JsonSchema;
use serde::Deserialize;
use tch::{nn, nn::Module, Kind, Tensor};
use vpt_sdk::checks::{check_elements, check_size};
use vpt_sdk::{
    BuildContext, Construction, Designer, DesignerFactory, Error, KindSpec, Metrics, Result,
    TchContext, TensorMap,
};

/// Config of `tiny_soft`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TinySoftConfig {
    /// Hidden width of φ (1 to 65536).
    #[serde(default = "default_hidden")]
    pub hidden: i64,
    /// Upper bound of the gate α.
    #[serde(default = "default_alpha_max")]
    pub alpha_max: f64,
    /// Initial gate logit (α starts at alpha_max·sigmoid(gate_init)).
    #[serde(default = "default_gate_init")]
    pub gate_init: f64,
}

fn default_hidden() -> i64 {
    32
}
fn default_alpha_max() -> f64 {
    1.0
}
fn default_gate_init() -> f64 {
    -2.0
}

/// Registers `tiny_soft`.
pub struct TinySoftFactory;

impl DesignerFactory for TinySoftFactory {
    const NAME: &'static str = "tiny_soft";
    const DESCRIPTION: &'static str = "learned per-example soft targets for the tiny task";
    const PRODUCES: KindSpec = crate::task::TINY_SOFT_TARGETS;
    type Config = TinySoftConfig;
    fn build(
        config: TinySoftConfig,
        task: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Designer>> {
        let dim = |k: &str| {
            task.get(k)
                .and_then(|v| v.as_i64())
                .ok_or_else(|| Error::config(k, "missing from the task's designer context"))
        };
        check_size("hidden", config.hidden, 1, crate::task::MAX_WIDTH)?;
        if !config.gate_init.is_finite() {
            return Err(Error::config("gate_init", "must be a finite number"));
        }
        if !(0.0..=1.0).contains(&config.alpha_max) {
            return Err(Error::config("alpha_max", "must lie in [0, 1]"));
        }
        let (features, classes) = (dim("feature_dim")?, dim("classes")?);
        check_elements(
            "hidden",
            &[
                ("hidden", config.hidden as u64),
                ("features + classes", (features + classes).max(0) as u64),
            ],
            crate::task::MAX_ELEMENTS,
        )?;
        tch::manual_seed(ctx.seed as i64 ^ 0x5EED);
        let mut vs = nn::VarStore::new(ctx.device());
        let fc1 = nn::linear(
            vs.root() / "fc1",
            features,
            config.hidden,
            Default::default(),
        );
        let scores = nn::linear(
            vs.root() / "scores",
            config.hidden,
            classes,
            Default::default(),
        );
        let gate = nn::linear(vs.root() / "gate", config.hidden, 1, Default::default());
        vs.double();
        tch::no_grad(|| {
            gate.bs
                .as_ref()
                .map(|b| b.shallow_clone().fill_(config.gate_init))
        });
        Ok(Box::new(TinySoft {
            cfg: config,
            vs,
            fc1,
            scores,
            gate,
        }))
    }
}

/// The designer.
pub struct TinySoft {
    cfg: TinySoftConfig,
    vs: nn::VarStore,
    fc1: nn::Linear,
    scores: nn::Linear,
    gate: nn::Linear,
}

impl Designer for TinySoft {
    fn parameters(&self) -> Result<TensorMap> {
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(vars.into_iter().collect())
    }

    fn construct(&mut self, inputs: &TensorMap) -> Result<Construction> {
        let features = inputs.require("example_features")?;
        let onehot = inputs.require("pretext_onehot")?;
        let h = self.fc1.forward(features).f_tanh().op("tiny_soft hidden")?;
        let r = self.scores.forward(&h).f_softmax(-1, Kind::Double)?;
        let alpha =
            (self.gate.forward(&h).f_sigmoid()? * self.cfg.alpha_max).f_to_kind(Kind::Double)?; // (B,1)
        let probs = onehot * (1.0 - &alpha) + &alpha * r;
        Ok(Construction {
            kind: KIND_TINY_SOFT_TARGETS.into(),
            tensors: TensorMap::new()
                .with("probs", probs)
                .with("alpha", alpha.f_squeeze_dim(1)?),
        })
    }

    /// `alpha_mean`: the mean gate α of the step's targets.
    fn metrics(&self, construction: &Construction) -> Result<Metrics> {
        Ok(Metrics::from([(
            "alpha_mean".to_string(),
            construction.mean_of("alpha", None)?,
        )]))
    }

    /// R = mean α: pulls the targets back towards the pretext labels.
    fn regularizer(&mut self, construction: &Construction) -> Result<Option<Tensor>> {
        Ok(Some(
            construction
                .tensors
                .require("alpha")?
                .f_mean(Kind::Double)?,
        ))
    }
}
