//! The `reweight` designer: per-example loss weights from an MLP over the task's example
//! features, in the spirit of Learning to Reweight Examples (Ren et al., 2018).
//!
//! φ scores each example of a batch, s = MLP(standardise(x)) (B,), and the scores become weights
//! w ≥ 0 with mean 1 (B·softmax(s/T), or a renormalised sigmoid). The host multiplies the task's
//! per-example pretraining losses by w; the feedback alignment V tells φ which examples help the
//! downstream target. The last layer starts at zero, so the designer starts as the baseline.

use crate::config::{Activation, Normalization, Precision, Regularizer, ReweightConfig};
use tch::{nn, Kind, Tensor};
use vpt_sdk::{
    kinds, BuildContext, Construction, Designer, DesignerFactory, Error, KindSpec, Result,
    TchContext, TensorMap, KIND_EXAMPLE_WEIGHTS,
};

/// Smallest weight fed to a logarithm in the regulariser (keeps R finite when a weight underflows).
const LOG_FLOOR: f64 = 1e-30;
/// Added to the per-batch variance when standardising (a constant feature maps to 0, not NaN).
const STD_EPS: f64 = 1e-5;

/// Registers `reweight`.
pub struct ReweightFactory;

impl DesignerFactory for ReweightFactory {
    const NAME: &'static str = "reweight";
    const DESCRIPTION: &'static str =
        "learned per-example loss weights (MLP over example_features → B·softmax), works with any task";
    const PRODUCES: KindSpec = kinds::EXAMPLE_WEIGHTS;
    type Config = ReweightConfig;

    fn build(
        config: ReweightConfig,
        task: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Designer>> {
        config.validate()?;
        let features = task.get("feature_dim").and_then(|v| v.as_i64()).ok_or_else(|| {
            Error::config(
                "feature_dim",
                "the task's designer context has no integer `feature_dim`: reweight needs a task whose \
                 design_inputs include `example_features` (B, F) and whose designer_context gives F",
            )
        })?;
        Ok(Box::new(Reweight::new(config, features, ctx)?))
    }
}

/// The designer: φ = hidden layers + a zero-initialised scoring layer.
pub struct Reweight {
    cfg: ReweightConfig,
    vs: nn::VarStore,
    hidden: Vec<nn::Linear>,
    score: nn::Linear,
    features: i64,
    kind: Kind,
}

impl Reweight {
    /// Builds φ for inputs of width `features` (hidden layers seeded from `ctx.seed`).
    pub fn new(cfg: ReweightConfig, features: i64, ctx: &BuildContext) -> Result<Self> {
        if features <= 0 {
            return Err(Error::config(
                "feature_dim",
                format!("must be positive, got {features}"),
            ));
        }
        tch::manual_seed(ctx.seed as i64 ^ 0x7E_16E7);
        let mut vs = nn::VarStore::new(ctx.device());
        if let Some(&first) = cfg.hidden.first() {
            let factors = [("features", features as u64), ("hidden[0]", first as u64)];
            vpt_sdk::checks::check_elements("hidden[0]", &factors, crate::config::MAX_WEIGHTS)?;
        }
        let mut hidden = Vec::with_capacity(cfg.hidden.len());
        let mut width = features;
        for (i, &h) in cfg.hidden.iter().enumerate() {
            hidden.push(nn::linear(
                vs.root() / "layers" / i,
                width,
                h,
                Default::default(),
            ));
            width = h;
        }
        // Zero init: every score is 0, so w = 1 for every example, i.e. exactly the baseline.
        let zero = nn::LinearConfig {
            ws_init: nn::Init::Const(0.0),
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let score = nn::linear(vs.root() / "score", width, 1, zero);
        let kind = match cfg.dtype {
            Precision::Float32 => Kind::Float,
            Precision::Float64 => {
                vs.double();
                Kind::Double
            }
        };
        Ok(Reweight {
            cfg,
            vs,
            hidden,
            score,
            features,
            kind,
        })
    }

    /// Scores s (B,) of features `x` (B, F).
    fn scores(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.f_to_kind(self.kind)?;
        if self.cfg.standardize {
            let mean = h.f_mean_dim(Some(&[0i64][..]), true, self.kind)?; // (1, F)
            let centred = h.f_sub(&mean)?;
            let var = centred
                .f_square()?
                .f_mean_dim(Some(&[0i64][..]), true, self.kind)?; // (1, F)
            h = centred.f_div(&var.f_add_scalar(STD_EPS)?.f_sqrt()?)?;
        }
        for layer in &self.hidden {
            h = h.f_linear(&layer.ws, layer.bs.as_ref())?;
            h = match self.cfg.activation {
                Activation::Tanh => h.f_tanh()?,
                Activation::Relu => h.f_relu()?,
            };
        }
        h.f_linear(&self.score.ws, self.score.bs.as_ref())?
            .f_squeeze_dim(1)
            .op("reweight scores") // (B,)
    }

    /// Weights w (B,) ≥ 0 with mean 1 from scores s (B,).
    fn weights(&self, s: &Tensor) -> Result<Tensor> {
        let b = s.size()[0] as f64;
        let z = s.f_div_scalar(self.cfg.temperature)?;
        match self.cfg.normalization {
            Normalization::Softmax => z.f_softmax(0, self.kind)?.f_mul_scalar(b),
            Normalization::Sigmoid => {
                let g = z.f_sigmoid()?;
                g.f_div(&g.f_mean(self.kind)?)
            }
        }
        .op("reweight weights")
    }
}

impl Designer for Reweight {
    fn parameters(&self) -> Result<TensorMap> {
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(vars.into_iter().collect())
    }

    fn construct(&mut self, inputs: &TensorMap) -> Result<Construction> {
        let x = inputs.require(&self.cfg.input)?;
        let size = x.size();
        if size.len() != 2 || size[1] != self.features || size[0] == 0 {
            return Err(Error::Tensor {
                name: self.cfg.input.clone(),
                message: format!(
                    "expected shape (B, {}) with B > 0, got {size:?}",
                    self.features
                ),
            });
        }
        let weights = self.weights(&self.scores(x)?)?;
        Ok(Construction {
            kind: KIND_EXAMPLE_WEIGHTS.into(),
            tensors: TensorMap::new().with("weights", weights),
        })
    }

    /// R(φ, c): `kl` = KL(w/B ‖ uniform) = mean(w log w); `reverse_kl` = KL(uniform ‖ w/B) =
    /// −mean(log w). Both are 0 at uniform weights and ≥ 0 otherwise.
    fn regularizer(&mut self, construction: &Construction) -> Result<Option<Tensor>> {
        let w = construction.tensors.require("weights")?;
        let log_w = w.f_clamp_min(LOG_FLOOR)?.f_log()?;
        let r = match self.cfg.regularizer {
            Regularizer::Kl => w.f_mul(&log_w)?.f_mean(Kind::Double)?,
            Regularizer::ReverseKl => log_w.f_mean(Kind::Double)?.f_neg()?,
        };
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpt_sdk::parse_config;

    fn designer(cfg: serde_json::Value, features: i64) -> Reweight {
        tch::set_num_threads(1);
        let ctx = BuildContext {
            seed: 3,
            device: "cpu".into(),
        };
        Reweight::new(parse_config(&cfg).unwrap(), features, &ctx).unwrap()
    }

    fn inputs(b: i64, f: i64, seed: i64) -> TensorMap {
        tch::manual_seed(seed);
        let x = Tensor::randn([b, f], (Kind::Double, tch::Device::Cpu)) * 3.0 + 1.0;
        TensorMap::new().with("example_features", x)
    }

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.detach().to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    /// Moves every parameter off zero so that scores differ between examples.
    fn perturb(d: &Reweight, seed: i64) {
        tch::manual_seed(seed);
        tch::no_grad(|| {
            for (_, p) in d.parameters().unwrap().iter() {
                let _ = p.shallow_clone().f_add_(&(p.randn_like() * 0.5)).unwrap();
            }
        });
    }

    #[test]
    fn weights_have_batch_shape_are_non_negative_and_average_one() {
        for norm in ["softmax", "sigmoid"] {
            for dtype in ["float32", "float64"] {
                let cfg =
                    serde_json::json!({"normalization": norm, "dtype": dtype, "hidden": [16, 8]});
                let mut d = designer(cfg, 6);
                perturb(&d, 1);
                let c = d.construct(&inputs(20, 6, 2)).unwrap();
                assert_eq!(c.kind, KIND_EXAMPLE_WEIGHTS);
                let w = c.tensors.require("weights").unwrap();
                assert_eq!(w.size(), vec![20], "{norm} {dtype}");
                let v = values(w);
                assert!(
                    v.iter().all(|&x| x >= 0.0 && x.is_finite()),
                    "{norm} {dtype}: {v:?}"
                );
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                assert!((mean - 1.0).abs() < 1e-5, "{norm} {dtype}: mean {mean}");
                let spread = v.iter().cloned().fold(f64::MIN, f64::max)
                    - v.iter().cloned().fold(f64::MAX, f64::min);
                assert!(
                    spread > 1e-3,
                    "{norm} {dtype}: perturbed φ should not give uniform weights"
                );
            }
        }
    }

    #[test]
    fn zero_initialised_designer_is_the_uniform_baseline() {
        for norm in ["softmax", "sigmoid"] {
            let mut d = designer(serde_json::json!({"normalization": norm}), 5);
            let c = d.construct(&inputs(12, 5, 4)).unwrap();
            let v = values(c.tensors.require("weights").unwrap());
            assert!(v.iter().all(|&x| (x - 1.0).abs() < 1e-6), "{norm}: {v:?}");
            let r = d.regularizer(&c).unwrap().unwrap().double_value(&[]);
            assert!(r.abs() < 1e-6, "{norm}: R at uniform weights = {r}");
        }
    }

    #[test]
    fn gradient_of_a_weighted_loss_reaches_every_layer_of_phi() {
        let mut d = designer(serde_json::json!({"hidden": [8], "dtype": "float64"}), 4);
        let x = inputs(10, 4, 5);
        tch::manual_seed(6);
        let per_example = Tensor::rand([10], (Kind::Double, tch::Device::Cpu));
        let phi = d.parameters().unwrap();
        let grads = |d: &mut Reweight| {
            let w = d.construct(&x).unwrap().tensors.remove("weights").unwrap();
            let loss = (w * &per_example).mean(Kind::Double);
            let ps: Vec<Tensor> = phi.tensors().map(Tensor::shallow_clone).collect();
            let gs = Tensor::run_backward(&[loss], &ps, false, false);
            phi.names()
                .into_iter()
                .zip(gs)
                .map(|(n, g)| (n.to_string(), values(&g)))
                .collect::<Vec<_>>()
        };
        let norm = |g: &[f64]| g.iter().map(|x| x * x).sum::<f64>().sqrt();
        // At zero init only the scoring layer's weight moves the loss (the hidden layers are
        // behind a zero matrix, the softmax ignores a shared bias).
        for (name, g) in grads(&mut d) {
            assert!(g.iter().all(|x| x.is_finite()), "{name}");
            if name == "score.weight" {
                assert!(norm(&g) > 1e-6, "score.weight gets no gradient at init");
            }
        }
        perturb(&d, 7);
        for (name, g) in grads(&mut d) {
            if name != "score.bias" {
                assert!(norm(&g) > 1e-8, "{name}: no gradient after perturbation");
            }
        }
    }

    #[test]
    fn regularizers_grow_away_from_uniform() {
        for reg in ["kl", "reverse_kl"] {
            let mut d = designer(serde_json::json!({"regularizer": reg}), 3);
            perturb(&d, 8);
            let c = d.construct(&inputs(16, 3, 9)).unwrap();
            let r = d.regularizer(&c).unwrap().unwrap().double_value(&[]);
            assert!(r > 1e-6 && r.is_finite(), "{reg}: {r}");
        }
    }

    #[test]
    fn wrong_feature_width_is_a_clear_error() {
        let mut d = designer(serde_json::json!({}), 7);
        let e = d.construct(&inputs(4, 5, 1)).unwrap_err().to_string();
        assert!(
            e.contains("example_features") && e.contains("(B, 7)"),
            "{e}"
        );
        let e = ReweightFactory::build(
            parse_config(&serde_json::json!({})).unwrap(),
            &serde_json::json!({"dim": 3}),
            &BuildContext {
                seed: 0,
                device: "cpu".into(),
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("feature_dim"), "{e}");
    }
}
