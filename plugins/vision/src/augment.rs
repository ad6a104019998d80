//! DINO multi-crop with photometric augmentations, written with tch ops. The random parameters
//! are drawn from a [`SplitMix64`] stream, so crops are a pure function of (seed, cursor) and do
//! not consume (or depend on) the torch RNG.

use tch::Tensor;
use vpt_sdk::rng::SplitMix64;
use vpt_sdk::{Result, TchContext};

/// How the crops of one batch are drawn.
#[derive(Debug, Clone, Copy)]
pub struct MultiCropSpec {
    /// Number of global crops (≥ 2: teacher targets come from them).
    pub globals: usize,
    /// Side of a global crop.
    pub global_size: i64,
    /// Area fraction range of a global crop.
    pub global_scale: (f64, f64),
    /// Number of local crops.
    pub locals: usize,
    /// Side of a local crop.
    pub local_size: i64,
    /// Area fraction range of a local crop.
    pub local_scale: (f64, f64),
    /// Probability of a horizontal flip.
    pub flip_p: f64,
    /// Brightness/contrast jitter strength (factors in [1−s, 1+s]).
    pub jitter: f64,
    /// Probability of a Gaussian blur.
    pub blur_p: f64,
}

impl Default for MultiCropSpec {
    fn default() -> Self {
        MultiCropSpec {
            globals: 2,
            global_size: 64,
            global_scale: (0.4, 1.0),
            locals: 4,
            local_size: 32,
            local_scale: (0.1, 0.4),
            flip_p: 0.5,
            jitter: 0.4,
            blur_p: 0.3,
        }
    }
}

/// A 5×5 Gaussian blur (σ = `sigma`, zero padding) of `x` (N,C,H,W), per channel.
pub fn gaussian_blur(x: &Tensor, sigma: f64) -> Result<Tensor> {
    let k: Vec<f64> = (-2..=2)
        .map(|i: i32| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = k.iter().sum();
    let k: Vec<f64> = k.iter().map(|v| v / s).collect();
    let c = x.size()[1];
    let k1 = Tensor::f_from_slice(&k)?
        .f_to_kind(x.kind())?
        .f_to(x.device())?;
    // Outer product → (5,5), repeated per channel as a depthwise (C,1,5,5) filter.
    let k2 = k1
        .f_unsqueeze(1)?
        .f_matmul(&k1.f_unsqueeze(0)?)?
        .f_expand([c, 1, 5, 5], false)?
        .f_contiguous()?;
    x.f_conv2d(&k2, None::<Tensor>, [1, 1], [2, 2], [1, 1], c)
        .op("gaussian blur")
}

/// Random resized crops of `x` (N,C,H,W) to `size`×`size`, with flips and photometric jitter;
/// `aux` (N,A,H,W), when given, gets the same geometric crop (no photometric change).
fn crops(
    x: &Tensor,
    aux: Option<&Tensor>,
    rng: &mut SplitMix64,
    size: i64,
    scale: (f64, f64),
    spec: &MultiCropSpec,
) -> Result<(Tensor, Option<Tensor>)> {
    let n = x.size()[0];
    let c = x.size()[1];
    let (mut theta, mut bright, mut contrast, mut blur) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let area = rng.range(scale.0, scale.1);
        let aspect = rng.range((3f64 / 4.0).ln(), (4f64 / 3.0).ln()).exp();
        let w = (area * aspect).sqrt().min(1.0);
        let h = (area / aspect).sqrt().min(1.0);
        let cx = rng.range(-(1.0 - w), 1.0 - w + 1e-12);
        let cy = rng.range(-(1.0 - h), 1.0 - h + 1e-12);
        let flip = if rng.bernoulli(spec.flip_p) {
            -1.0
        } else {
            1.0
        };
        // Affine map from output coords to input coords (normalised [-1,1]): a window w×h at (cx,cy).
        theta.extend([w * flip, 0.0, cx, 0.0, h, cy]);
        bright.push(rng.range(1.0 - spec.jitter, 1.0 + spec.jitter));
        contrast.push(rng.range(1.0 - spec.jitter, 1.0 + spec.jitter));
        blur.push(if rng.bernoulli(spec.blur_p) { 1.0 } else { 0.0 });
    }
    let dev = x.device();
    let kind = x.kind();
    let t = |v: &[f64], shape: &[i64]| -> Result<Tensor> {
        Tensor::f_from_slice(v)?
            .f_to_kind(kind)?
            .f_to(dev)?
            .f_view(shape)
            .op("augmentation params")
    };
    let theta = t(&theta, &[n, 2, 3])?;
    let grid =
        Tensor::f_affine_grid_generator(&theta, [n, c, size, size], false).op("affine grid")?;
    // grid_sampler: interpolation 0 = bilinear, padding 0 = zeros.
    let out = x
        .f_grid_sampler(&grid, 0, 0, false)
        .op("random resized crop")?;
    let aux = match aux {
        Some(a) => Some(
            a.f_grid_sampler(&grid.f_to_kind(a.kind())?, 0, 0, false)
                .op("aux crop")?,
        ),
        None => None,
    };
    let mean = out.f_mean_dim([1i64, 2, 3].as_slice(), true, kind)?;
    let out = out.f_mul(&t(&bright, &[n, 1, 1, 1])?)?;
    let mean = mean.f_mul(&t(&bright, &[n, 1, 1, 1])?)?;
    let out = out
        .f_sub(&mean)?
        .f_mul(&t(&contrast, &[n, 1, 1, 1])?)?
        .f_add(&mean)?
        .f_clamp(0.0, 1.0)?;
    let b = t(&blur, &[n, 1, 1, 1])?;
    let blurred = gaussian_blur(&out, 1.0)?;
    // out·(1−b) + blur(out)·b, per sample.
    let out = out
        .f_mul(&b.f_neg()?.f_add_scalar(1.0)?)?
        .f_add(&blurred.f_mul(&b)?)?;
    Ok((out, aux))
}

/// Multi-crop of `images` (B,C,H,W): returns global (B,Vg,C,G,G) and local (B,Vl,C,L,L) crops.
pub fn multi_crop(
    images: &Tensor,
    rng: &mut SplitMix64,
    spec: &MultiCropSpec,
) -> Result<(Tensor, Tensor)> {
    let (g, l, _) = multi_crop_with(images, None, rng, spec)?;
    Ok((g, l))
}

/// [`multi_crop`], plus the global crops' geometry applied to `aux` (B,A,H,W) (e.g. region
/// maps): returns (global, local, global aux (B,Vg,A,G,G)). The random draws are those of
/// `multi_crop`, so the crops are the same with or without `aux`.
pub fn multi_crop_with(
    images: &Tensor,
    aux: Option<&Tensor>,
    rng: &mut SplitMix64,
    spec: &MultiCropSpec,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let s = images.size();
    let (b, c) = (s[0], s[1]);
    let stack = |vs: Vec<Tensor>, ch: i64, size: i64| -> Result<Tensor> {
        if vs.is_empty() {
            return Tensor::f_zeros([b, 0, ch, size, size], (images.kind(), images.device()))
                .op("no crops");
        }
        // k × (B,C,S,S) → (B,k,C,S,S)
        Tensor::f_stack(&vs, 1).op("stack crops")
    };
    let view = |k: usize,
                size: i64,
                scale: (f64, f64),
                aux: Option<&Tensor>,
                rng: &mut SplitMix64|
     -> Result<(Tensor, Option<Tensor>)> {
        let (mut vs, mut avs) = (Vec::new(), Vec::new());
        for _ in 0..k {
            let (v, a) = crops(images, aux, rng, size, scale, spec)?;
            vs.push(v);
            avs.extend(a);
        }
        let a = match aux {
            Some(a) => Some(stack(avs, a.size()[1], size)?),
            None => None,
        };
        Ok((stack(vs, c, size)?, a))
    };
    let (g, ga) = view(spec.globals, spec.global_size, spec.global_scale, aux, rng)?;
    let (l, _) = view(spec.locals, spec.local_size, spec.local_scale, None, rng)?;
    Ok((g, l, ga))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn crops_have_the_right_shapes_and_are_deterministic() {
        let x = Tensor::rand([3, 1, 64, 64], (Kind::Float, tch::Device::Cpu));
        let spec = MultiCropSpec::default();
        let (g1, l1) = multi_crop(&x, &mut SplitMix64::new(5), &spec).unwrap();
        let (g2, l2) = multi_crop(&x, &mut SplitMix64::new(5), &spec).unwrap();
        assert_eq!(g1.size(), [3, 2, 1, 64, 64]);
        assert_eq!(l1.size(), [3, 4, 1, 32, 32]);
        assert!(g1.equal(&g2) && l1.equal(&l2));
        let (g3, _) = multi_crop(&x, &mut SplitMix64::new(6), &spec).unwrap();
        assert!(!g1.equal(&g3));
        assert!(g1.min().double_value(&[]) >= 0.0 && g1.max().double_value(&[]) <= 1.0);
    }

    /// The aux tensor gets the global crops' geometry (without jitter and blur it is the
    /// image's own crop), and the crops do not change when aux is given.
    #[test]
    fn aux_maps_get_the_same_geometric_crop() {
        let x = Tensor::rand([2, 1, 64, 64], (Kind::Float, tch::Device::Cpu));
        let aux = Tensor::cat(&[&x, &(x.ones_like() - &x)], 1);
        let spec = MultiCropSpec {
            jitter: 0.0,
            blur_p: 0.0,
            ..MultiCropSpec::default()
        };
        let (g, l) = multi_crop(&x, &mut SplitMix64::new(9), &spec).unwrap();
        let (g2, l2, a) = multi_crop_with(&x, Some(&aux), &mut SplitMix64::new(9), &spec).unwrap();
        assert!(g.equal(&g2) && l.equal(&l2));
        let a = a.unwrap();
        assert_eq!(a.size(), [2, 2, 2, 64, 64]);
        assert!(a.narrow(2, 0, 1).allclose(&g, 1e-6, 1e-6, false));
    }

    #[test]
    fn blur_preserves_a_constant_interior() {
        let x = Tensor::ones([1, 1, 9, 9], (Kind::Double, tch::Device::Cpu));
        let y = gaussian_blur(&x, 1.0).unwrap();
        assert!((y.double_value(&[0, 0, 4, 4]) - 1.0).abs() < 1e-12);
        assert!(y.double_value(&[0, 0, 0, 0]) < 1.0);
    }
}
