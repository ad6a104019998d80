//! What the designer does, for a person to look at: a PNG grid of a few global crops, their
//! masks and the masked views the student sees, and the keep statistics of masks against the
//! scenes' object / clutter regions.
//!
//! The PNG is written by hand (8-bit grey, one IDAT of zlib-compressed rows with filter 0; the
//! CRCs from `flate2`), into the run directory the host names in `VPT_RUN_DIR`.

use flate2::write::ZlibEncoder;
use flate2::{Compression, Crc};
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};
use vpt_sdk::{Error, Result, TchContext, TensorMap};

/// The environment variable the host sets to the run directory before training.
pub const RUN_DIR_ENV: &str = "VPT_RUN_DIR";
/// Examples shown per grid.
pub const GRID_EXAMPLES: i64 = 4;
/// Pixels per view pixel in the grid.
const ZOOM: usize = 2;
/// Grey gap between tiles.
const GAP: usize = 4;

/// Encodes an 8-bit greyscale image (`pixels` row-major, `width`·`height` bytes) as PNG.
pub fn encode_gray_png(width: usize, height: usize, pixels: &[u8]) -> Result<Vec<u8>> {
    if pixels.len() != width * height || width == 0 || height == 0 {
        return Err(Error::msg(format!(
            "png: {} pixels for {width}×{height}",
            pixels.len()
        )));
    }
    let mut raw = Vec::with_capacity((width + 1) * height);
    for row in pixels.chunks(width) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(&raw)
        .and_then(|_| z.flush())
        .map_err(|e| Error::msg(format!("png: deflate: {e}")))?;
    let idat = z
        .finish()
        .map_err(|e| Error::msg(format!("png: deflate: {e}")))?;
    let mut ihdr = Vec::new();
    ihdr.extend((width as u32).to_be_bytes());
    ihdr.extend((height as u32).to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8 bits, greyscale, deflate, filter 0, no interlace
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    for (kind, data) in [
        (b"IHDR", ihdr.as_slice()),
        (b"IDAT", idat.as_slice()),
        (b"IEND", &[][..]),
    ] {
        out.extend((data.len() as u32).to_be_bytes());
        let mut crc = Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend(crc.sum().to_be_bytes());
    }
    Ok(out)
}

/// Lays out `rows` of tiles (each a (H,W) tensor in [0,1]) as one grey image, zoomed by 2 with
/// grey gaps: returns (width, height, pixels).
pub fn tile_grid(rows: &[Vec<Tensor>]) -> Result<(usize, usize, Vec<u8>)> {
    let first = rows
        .first()
        .and_then(|r| r.first())
        .ok_or_else(|| Error::msg("view grid: nothing to draw"))?;
    let (h, w) = (first.size()[0] as usize, first.size()[1] as usize);
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let (th, tw) = (h * ZOOM + GAP, w * ZOOM + GAP);
    let (width, height) = (cols * tw + GAP, rows.len() * th + GAP);
    let mut px = vec![128u8; width * height];
    for (ri, row) in rows.iter().enumerate() {
        for (ci, tile) in row.iter().enumerate() {
            let v: Vec<f32> = Vec::<f32>::try_from(
                tile.f_to_kind(Kind::Float)?
                    .f_clamp(0.0, 1.0)?
                    .f_contiguous()?
                    .f_view([-1])?,
            )
            .op("view grid tile")?;
            if v.len() != h * w {
                return Err(Error::msg("view grid: tiles of different sizes"));
            }
            for y in 0..h * ZOOM {
                for x in 0..w * ZOOM {
                    let val = v[(y / ZOOM) * w + x / ZOOM];
                    px[(GAP + ri * th + y) * width + GAP + ci * tw + x] =
                        (val * 255.0).round() as u8;
                }
            }
        }
    }
    Ok((width, height, px))
}

/// The grid of `views` (3 rows: clean crops, masks, masked views; each (N,H,W)) as a PNG file.
pub fn write_views_png(path: &Path, views: &Tensor) -> Result<()> {
    let s = views.size();
    let n = s[1].min(GRID_EXAMPLES);
    let rows = (0..s[0])
        .map(|r| (0..n).map(|i| views.get(r).get(i)).collect())
        .collect::<Vec<Vec<Tensor>>>();
    let (w, h, px) = tile_grid(&rows)?;
    let png = encode_gray_png(w, h, &px)?;
    std::fs::write(path, png).map_err(|e| Error::io(path, e))
}

/// `name` inside the run directory the host named, if it named one.
pub fn run_file(name: &str) -> Option<PathBuf> {
    std::env::var_os(RUN_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join(name))
}

/// Keep statistics of masks `mask` (B,V,1,H,W) against region indicators `region`
/// (B,V,2,H,W), channel 0 = object, 1 = clutter: the mean keep on object pixels, on the other
/// pixels (background and clutter), on clutter pixels (absent when there are none), and the
/// object margin (objects minus the rest). Scalars, no graph.
pub fn keep_by_region(mask: &Tensor, region: &Tensor) -> Result<TensorMap> {
    tch::no_grad(|| {
        let m = mask.f_detach()?.f_to_kind(Kind::Double)?;
        let obj = region.f_narrow(2, 0, 1)?.f_to_kind(Kind::Double)?;
        let clu = region.f_narrow(2, 1, 1)?.f_to_kind(Kind::Double)?;
        let rest = obj.f_neg()?.f_add_scalar(1.0)?;
        let mean_on = |w: &Tensor| -> Result<Option<Tensor>> {
            let total = w.f_sum(Kind::Double)?;
            if total.f_double_value(&[])? < 1e-9 {
                return Ok(None);
            }
            Ok(Some(m.f_mul(w)?.f_sum(Kind::Double)?.f_div(&total)?))
        };
        let mut out = TensorMap::new();
        let on_obj = mean_on(&obj)?;
        let on_rest = mean_on(&rest)?;
        if let (Some(a), Some(b)) = (&on_obj, &on_rest) {
            out.insert("keep_object_margin", a.f_sub(b)?);
        }
        for (name, v) in [
            ("keep_objects", on_obj),
            ("keep_background", on_rest),
            ("keep_clutter", mean_on(&clu)?),
        ] {
            if let Some(v) = v {
                out.insert(name, v);
            }
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn keep_statistics_on_a_known_mask() {
        // one 4×4 view: objects in the left half, clutter in the top-right quarter
        let mut obj = vec![0f32; 16];
        let mut clu = vec![0f32; 16];
        let mut m = vec![0f32; 16];
        for r in 0..4 {
            for c in 0..4 {
                let p = r * 4 + c;
                if c < 2 {
                    obj[p] = 1.0;
                    m[p] = 0.9;
                } else if r < 2 {
                    clu[p] = 1.0;
                    m[p] = 0.1;
                } else {
                    m[p] = 0.5;
                }
            }
        }
        let region = Tensor::from_slice(&[obj, clu].concat()).view([1, 1, 2, 4, 4]);
        let mask = Tensor::from_slice(&m).view([1, 1, 1, 4, 4]);
        let s = keep_by_region(&mask, &region).unwrap();
        let v = |k: &str| s.require(k).unwrap().double_value(&[]);
        assert!((v("keep_objects") - 0.9).abs() < 1e-6);
        assert!((v("keep_clutter") - 0.1).abs() < 1e-6);
        assert!((v("keep_background") - 0.3).abs() < 1e-6); // (4·0.1 + 4·0.5) / 8
        assert!((v("keep_object_margin") - 0.6).abs() < 1e-6);
        // no clutter pixels: no clutter statistic
        let clean = Tensor::cat(
            &[region.narrow(2, 0, 1), region.narrow(2, 0, 1).zeros_like()],
            2,
        );
        assert!(keep_by_region(&mask, &clean)
            .unwrap()
            .get("keep_clutter")
            .is_none());
    }

    #[test]
    fn png_has_a_valid_signature_header_and_crcs() {
        let px: Vec<u8> = (0..6 * 5).map(|i| (i * 8) as u8).collect();
        let png = encode_gray_png(6, 5, &px).unwrap();
        assert_eq!(&png[..8], &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]);
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 6);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 5);
        // walk the chunks, checking every CRC, and inflate IDAT back to the rows
        let mut at = 8;
        let mut idat = Vec::new();
        while at < png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            let body = &png[at + 4..at + 8 + len];
            let mut crc = Crc::new();
            crc.update(body);
            let want = u32::from_be_bytes(png[at + 8 + len..at + 12 + len].try_into().unwrap());
            assert_eq!(crc.sum(), want);
            if &body[..4] == b"IDAT" {
                idat.extend_from_slice(&body[4..]);
            }
            at += 12 + len;
        }
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&idat[..]), &mut raw)
            .unwrap();
        assert_eq!(raw.len(), 5 * 7);
        assert_eq!(&raw[1..7], &px[..6]);
        assert!(encode_gray_png(6, 4, &px).is_err());
    }

    #[test]
    fn grid_lays_tiles_out_zoomed() {
        let a = Tensor::ones([3, 3], (Kind::Float, Device::Cpu));
        let b = Tensor::zeros([3, 3], (Kind::Float, Device::Cpu));
        let (w, h, px) = tile_grid(&[vec![a.shallow_clone(), b], vec![a]]).unwrap();
        assert_eq!((w, h), (2 * (6 + GAP) + GAP, 2 * (6 + GAP) + GAP));
        assert_eq!(px[GAP * w + GAP], 255);
        assert_eq!(px[GAP * w + GAP + 6 + GAP], 0);
        assert_eq!(px[0], 128);
    }
}
