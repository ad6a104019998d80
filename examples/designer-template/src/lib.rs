//! designer_template: a minimal designer plugin, built outside the vpt workspace.
//!
//! It produces per-example loss weights (`any.example_weights/v1`), which the host applies to
//! any task's per-example pretraining losses, so it works with every task whose
//! `design_inputs` include `example_features` (B, F). Replace `construct` with your own idea.

use schemars::JsonSchema;
use serde::Deserialize;
use tch::{nn, nn::Module, Kind, Tensor};
use vpt_sdk::{
    BuildContext, Construction, Designer, DesignerFactory, DesignerInfo, Error, Result, TensorMap,
    KIND_EXAMPLE_WEIGHTS,
};

/// Config of `designer_template` (shown by `vpt schema designer_template`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Softmax temperature of the weights: higher is closer to uniform.
    #[serde(default = "default_temperature")]
    pub temperature: f64,
}

fn default_temperature() -> f64 {
    1.0
}

/// Registers the designer.
pub struct TemplateFactory;

impl DesignerFactory for TemplateFactory {
    const NAME: &'static str = "designer_template";
    const DESCRIPTION: &'static str = "per-example weights from a linear score of the example features";
    const PRODUCES: &'static str = KIND_EXAMPLE_WEIGHTS;
    type Config = Config;

    fn build(config: Config, task: &serde_json::Value, ctx: &BuildContext) -> Result<Box<dyn Designer>> {
        if !(config.temperature > 0.0) {
            return Err(Error::config("temperature", "must be positive"));
        }
        let features = task
            .get("feature_dim")
            .and_then(|v| v.as_i64())
            .ok_or_else(|| Error::config("feature_dim", "the task's designer context must give feature_dim"))?;
        let vs = nn::VarStore::new(ctx.device());
        // Zero init: uniform weights, i.e. exactly the baseline, until feedback moves φ.
        let score = nn::linear(
            vs.root() / "score",
            features,
            1,
            nn::LinearConfig { ws_init: nn::Init::Const(0.0), ..Default::default() },
        );
        Ok(Box::new(Template { cfg: config, vs, score }))
    }
}

/// The designer: φ is one linear layer.
pub struct Template {
    cfg: Config,
    vs: nn::VarStore,
    score: nn::Linear,
}

impl Designer for Template {
    fn info(&self) -> DesignerInfo {
        DesignerInfo { produces: KIND_EXAMPLE_WEIGHTS.into() }
    }

    fn parameters(&self) -> Result<TensorMap> {
        Ok(self.vs.variables().into_iter().collect())
    }

    fn construct(&mut self, inputs: &TensorMap) -> Result<Construction> {
        let x = inputs.require("example_features")?; // (B, F), detached by the task
        let kind = x.kind();
        let scores = self.score.forward(&x.f_to_kind(Kind::Float)?).f_squeeze_dim(1)?; // (B,)
        let b = scores.size()[0] as f64;
        // weights ≥ 0 with mean 1: B · softmax(scores / T)
        let weights = (scores / self.cfg.temperature).f_softmax(0, Kind::Float)? * b;
        Ok(Construction {
            kind: KIND_EXAMPLE_WEIGHTS.into(),
            tensors: TensorMap::new().with("weights", weights.f_to_kind(kind)?),
        })
    }

    /// R = KL(weights/B ‖ uniform): keeps the weights from collapsing onto a few examples.
    fn regularizer(&mut self, c: &Construction) -> Result<Option<Tensor>> {
        let w = c.tensors.require("weights")?;
        let p = w / w.size()[0] as f64;
        let kl = (&p * (&p * p.size()[0] as f64 + 1e-12).f_log()?).f_sum(Kind::Double)?;
        Ok(Some(kl))
    }
}

vpt_sdk::export_plugin! {
    name: "designer_template",
    tasks: [],
    designers: [TemplateFactory],
}
