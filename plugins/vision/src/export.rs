//! `vpt export --format safetensors` for the vision task: the trained ViT backbone (the student
//! θ, without the DINO head) as `model.safetensors` (names `patch_embed.*`, `cls_token`,
//! `pos_embed`, `blocks.{i}.*`, `norm.*`; f32 or f16) plus `config.json` (the [`VitConfig`]);
//! and [`load`], which reads that directory back into a [`Vit`].

use crate::vit::{Vit, VitConfig};
use serde_json::json;
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Device, Kind, Tensor};
use vpt_sdk::{Error, ExportRequest, Result, TchContext};

/// Name of the architecture in `config.json`.
pub const ARCHITECTURE: &str = "vpt_vit";

/// Writes the backbone variables of `vs` (those under `backbone.`) as `req` asks.
pub fn export(vit: &VitConfig, vs: &VarStore, req: &ExportRequest) -> Result<Vec<PathBuf>> {
    if req.format != "safetensors" {
        return Err(Error::config(
            "--format",
            format!(
                "the vision task writes `safetensors` (the ViT and its config), not `{}`",
                req.format
            ),
        ));
    }
    let kind = match req.dtype.as_str() {
        "f32" => Kind::Float,
        "f16" => Kind::Half,
        d => {
            return Err(Error::config(
                "--dtype",
                format!("safetensors export takes f32 or f16, not `{d}`"),
            ))
        }
    };
    if req.adapter {
        return Err(Error::config("--adapter", "the vision task has no adapter"));
    }
    let mut tensors: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter_map(|(n, t)| Some((n.strip_prefix("backbone.")?.to_string(), t)))
        .map(|(n, t)| {
            let t = t.f_detach()?.f_to(Device::Cpu)?.f_to_kind(kind)?;
            Ok((n, t.f_contiguous()?))
        })
        .collect::<Result<_>>()?;
    if tensors.is_empty() {
        return Err(Error::msg("the model has no `backbone.` parameters"));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let out = &req.out_dir;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let weights = out.join("model.safetensors");
    Tensor::write_safetensors(&tensors, &weights).op(&weights.display().to_string())?;
    let config = out.join("config.json");
    let doc = json!({"architecture": ARCHITECTURE, "torch_dtype": req.dtype, "vit": vit});
    std::fs::write(
        &config,
        serde_json::to_string_pretty(&doc).map_err(|e| Error::msg(e.to_string()))?,
    )
    .map_err(|e| Error::io(&config, e))?;
    Ok(vec![weights, config])
}

/// Reads an exported directory back: its config, the store (f32, on `device`) and the ViT.
pub fn load(dir: &Path, device: Device) -> Result<(VitConfig, VarStore, Vit)> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    if doc["architecture"] != ARCHITECTURE {
        return Err(Error::msg(format!(
            "{}: key `architecture` is not `{ARCHITECTURE}`",
            path.display()
        )));
    }
    let cfg: VitConfig = serde_json::from_value(doc["vit"].clone())
        .map_err(|e| Error::msg(format!("{}: key `vit`: {e}", path.display())))?;
    let vs = VarStore::new(device);
    let vit = Vit::new(vs.root(), &cfg)?;
    let weights = dir.join("model.safetensors");
    let file = Tensor::read_safetensors(&weights).op(&weights.display().to_string())?;
    let vars = vs.variables();
    if file.len() != vars.len() {
        return Err(Error::msg(format!(
            "{}: {} tensors, the config's ViT has {}",
            weights.display(),
            file.len(),
            vars.len()
        )));
    }
    tch::no_grad(|| {
        for (name, t) in &file {
            let mut v = vars.get(name).map(Tensor::shallow_clone).ok_or_else(|| {
                Error::msg(format!(
                    "{}: tensor `{name}` is not a ViT parameter",
                    weights.display()
                ))
            })?;
            if v.size() != t.size() {
                return Err(Error::Tensor {
                    name: name.clone(),
                    message: format!("the file has {:?}, the config {:?}", t.size(), v.size()),
                });
            }
            v.f_copy_(t).op(name)?;
        }
        Ok(())
    })?;
    Ok((cfg, vs, vit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_vit_reads_back_into_the_same_function() {
        tch::manual_seed(5);
        let cfg = VitConfig {
            dim: 32,
            depth: 2,
            ..VitConfig::default()
        };
        let vs = VarStore::new(Device::Cpu);
        let vit = Vit::new(vs.root() / "backbone", &cfg).unwrap();
        let _head = (vs.root() / "head").var("w", &[3, 3], tch::nn::Init::Const(1.0));
        let dir = std::env::temp_dir().join(format!("vpt-vit-export-{}", std::process::id()));
        let req = |dtype: &str| ExportRequest {
            format: "safetensors".into(),
            dtype: dtype.into(),
            adapter: false,
            out_dir: dir.clone(),
        };
        let files = export(&cfg, &vs, &req("f32")).unwrap();
        assert_eq!(files.len(), 2);
        let (cfg2, _vs2, vit2) = load(&dir, Device::Cpu).unwrap();
        assert_eq!(cfg2, cfg);
        let x = Tensor::randn([2, 1, 64, 64], (Kind::Float, Device::Cpu));
        let (a, b) = (vit.forward(&x).unwrap(), vit2.forward(&x).unwrap());
        assert!(a.equal(&b), "f32 export changes the function");
        export(&cfg, &vs, &req("f16")).unwrap();
        let (_, _, vit3) = load(&dir, Device::Cpu).unwrap();
        let d = (vit3.forward(&x).unwrap() - &a)
            .abs()
            .max()
            .double_value(&[]);
        assert!(d > 0.0 && d < 0.05, "f16 export differs by {d}");
        let e = export(
            &cfg,
            &vs,
            &ExportRequest {
                format: "gguf".into(),
                ..req("f32")
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--format") && e.contains("safetensors"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
