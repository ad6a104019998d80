//! designer_template: a minimal designer plugin, built outside the vpt workspace.
//!
//! It produces per-example loss weights (`any.example_weights/v1`), which the host applies to
//! any task's per-example pretraining losses, so it works with every task whose
//! `design_inputs` include `example_features` (B, F). Replace `construct` with your own idea.

use schemars::JsonSchema;
use serde::Deserialize;
use tch::{nn, Kind, Tensor};
use vpt_sdk::{
    kinds, BuildContext, Construction, Designer, DesignerFactory, Error, KindSpec, Result,
    TchContext, TensorMap, KIND_EXAMPLE_WEIGHTS,
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
    const DESCRIPTION: &'static str =
        "per-example weights from a linear score of the example features";
    const PRODUCES: KindSpec = kinds::EXAMPLE_WEIGHTS;
    type Config = Config;

    fn build(
        config: Config,
        task: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Designer>> {
        if config.temperature.is_nan() || config.temperature <= 0.0 {
            return Err(Error::config("temperature", "must be positive"));
        }
        let features = task
            .get("feature_dim")
            .and_then(|v| v.as_i64())
            .ok_or_else(|| {
                Error::config(
                    "feature_dim",
                    "the task's designer context must give feature_dim",
                )
            })?;
        let vs = nn::VarStore::new(ctx.device());
        // Zero init: uniform weights, i.e. exactly the baseline, until feedback moves φ.
        let zero = nn::LinearConfig {
            ws_init: nn::Init::Const(0.0),
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let score = nn::linear(vs.root() / "score", features, 1, zero);
        Ok(Box::new(Template {
            cfg: config,
            vs,
            score,
        }))
    }
}

/// The designer: φ is one linear layer.
pub struct Template {
    cfg: Config,
    vs: nn::VarStore,
    score: nn::Linear,
}

impl Designer for Template {
    /// φ: the live leaf tensors (the host updates them in place).
    fn parameters(&self) -> Result<TensorMap> {
        Ok(self.vs.variables().into_iter().collect())
    }

    /// Differentiable in φ; the host detaches it before the learner step.
    fn construct(&mut self, inputs: &TensorMap) -> Result<Construction> {
        let x = inputs.require("example_features")?.f_to_kind(Kind::Float)?; // (B, F), detached by the task
        let scores = x
            .f_linear(&self.score.ws, self.score.bs.as_ref())?
            .f_squeeze_dim(1)?; // (B,)
        let b = scores.size()[0] as f64;
        // weights ≥ 0 with mean 1: B · softmax(scores / T)
        let weights = scores
            .f_div_scalar(self.cfg.temperature)?
            .f_softmax(0, Kind::Float)?
            .f_mul_scalar(b)
            .op("designer_template weights")?;
        Ok(Construction {
            kind: KIND_EXAMPLE_WEIGHTS.into(),
            tensors: TensorMap::new().with("weights", weights),
        })
    }

    /// R = KL(weights/B ‖ uniform) = mean(w log w): keeps the weights from collapsing onto a few
    /// examples (scaled by `meta.lambda`).
    fn regularizer(&mut self, c: &Construction) -> Result<Option<Tensor>> {
        let w = c.tensors.require("weights")?;
        let kl = w
            .f_mul(&w.f_clamp_min(1e-30)?.f_log()?)?
            .f_mean(Kind::Double)?;
        Ok(Some(kl))
    }
}

vpt_sdk::export_plugin! {
    name: "designer_template",
    tasks: [],
    designers: [TemplateFactory],
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpt_sdk::{testing, DesignerFactory, Task};

    #[test]
    fn starts_uniform_and_keeps_mean_one() {
        let ctx = BuildContext {
            seed: 0,
            device: "cpu".into(),
        };
        let config = vpt_sdk::parse_config(&serde_json::json!({})).unwrap();
        let mut d =
            TemplateFactory::build(config, &serde_json::json!({ "feature_dim": 3 }), &ctx).unwrap();
        let x = Tensor::randn([5, 3], (Kind::Double, tch::Device::Cpu));
        let c = d
            .construct(&TensorMap::new().with("example_features", x))
            .unwrap();
        let w = c.tensors.require("weights").unwrap();
        assert_eq!(w.size(), [5]);
        assert!(
            (w - 1.0).abs().max().double_value(&[]) < 1e-6,
            "zero init is the baseline"
        );
    }

    /// The contract harness on this designer and the `tiny` task of vpt's `tiny` plugin
    /// (`libvpt_tiny.so`, found on VPT_PLUGIN_PATH, which `.cargo/config.toml` sets): the SDK
    /// alone, no vpt host. For a designer of the LM's soft targets, load `lm` and build
    /// `causal_lm` with `{"model": "tiny_random", ...}` instead (docs/writing-plugins.md §9).
    #[test]
    fn contracts_hold_on_the_tiny_task() {
        tch::set_num_threads(1);
        let ctx = BuildContext {
            seed: 0,
            device: "cpu".into(),
        };
        let tiny = testing::plugin("tiny").unwrap();
        let mut task = tiny.new_task("tiny", &serde_json::json!({}), &ctx).unwrap();
        let context = task.info().designer_context;
        let mut d = crate::vpt_registry()
            .designer("designer_template")
            .unwrap()
            .build(&serde_json::json!({}), &context, &ctx)
            .unwrap();
        let manifest = tiny.manifest().unwrap();
        let opts = testing::InvariantOptions::for_task(manifest.task("tiny").unwrap());
        testing::check_invariants(&mut task, Some(d.as_mut()), &opts).assert_passed();
        // φ starts at zero (the baseline): move it off zero so every coordinate has a derivative.
        tch::manual_seed(1);
        tch::no_grad(|| {
            for p in d.parameters().unwrap().tensors() {
                let _ = p.shallow_clone().f_add_(&(p.randn_like() * 0.3)).unwrap();
            }
        });
        // φ is f32: ε = 1e-3 and a 5e-2 tolerance are what f32 finite differences resolve.
        testing::check_hypergradient(&mut task, d.as_mut(), 1e-3, 5e-2).assert_passed();
    }
}
