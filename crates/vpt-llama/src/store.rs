//! VarStore helpers shared by the checkpoint loaders.

use tch::{nn, Tensor};
use vpt_sdk::{Error, Result, TchContext};

/// Stores `t` as variable `name` (dot-joined) of `vs`: copies into an existing variable of the
/// same shape, or creates a trainable one.
pub fn set_var(vs: &nn::VarStore, name: &str, t: &Tensor) -> Result<()> {
    let parts: Vec<&str> = name.split('.').collect();
    let (last, dirs) = parts
        .split_last()
        .ok_or_else(|| Error::msg("empty variable name"))?;
    let mut p = vs.root();
    for d in dirs {
        p = p.sub(*d);
    }
    match p.get(last) {
        Some(mut v) => {
            if v.size() != t.size() {
                return Err(Error::Tensor {
                    name: name.into(),
                    message: format!("store holds {:?}, the file has {:?}", v.size(), t.size()),
                });
            }
            tch::no_grad(|| v.f_copy_(t)).op(name)?;
        }
        None => {
            let t = t.f_to_kind(vs.kind())?.f_to(vs.device())?;
            let _ = p.f_var_copy(last, &t).op(name)?;
        }
    }
    Ok(())
}
