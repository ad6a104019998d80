//! ggml tensor types and their dequantisation to f32 (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0 and the k-quant Q6_K), following ggml's `ggml/src/ggml-quants.c` (`dequantize_row_*`).

use half::{bf16, f16};

/// ggml tensor types this reader knows (ids from `ggml.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 0: f32
    F32,
    /// 1: f16
    F16,
    /// 2: blocks of 32: f16 scale d, 16 bytes of 4-bit q; x = (q − 8)·d
    Q4_0,
    /// 3: blocks of 32: f16 d, f16 m, 16 bytes of 4-bit q; x = q·d + m
    Q4_1,
    /// 6: blocks of 32: f16 d, 32 high bits, 16 bytes of low nibbles; x = (q − 16)·d
    Q5_0,
    /// 7: blocks of 32: f16 d, f16 m, 32 high bits, 16 bytes of low nibbles; x = q·d + m
    Q5_1,
    /// 8: blocks of 32: f16 d, 32 i8 q; x = q·d
    Q8_0,
    /// 14: super-blocks of 256: 128 B low nibbles, 64 B high 2-bit pairs, 16 i8 scales, f16 d
    Q6K,
    /// 30: bfloat16
    BF16,
}

impl GgmlType {
    /// The type with ggml id `id`, if supported.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }
    /// The ggml id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q6K => 14,
            GgmlType::BF16 => 30,
        }
    }
    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q6K => (256, 210),
        }
    }
}

/// Dequantises `raw` bytes of type `ty` to f32 (row-major, blocks along the fastest axis).
pub fn dequantize(ty: GgmlType, raw: &[u8]) -> std::result::Result<Vec<f32>, String> {
    let (blk, bytes) = ty.block();
    if raw.len().checked_rem(bytes) != Some(0) {
        return Err(format!(
            "{} bytes is not a whole number of {ty:?} blocks of {bytes} bytes",
            raw.len()
        ));
    }
    let f16_at = |b: &[u8], i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    let mut out = Vec::with_capacity(raw.len() / bytes * blk);
    for b in raw.chunks_exact(bytes) {
        match ty {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(f16_at(b, 0)),
            GgmlType::BF16 => out.push(bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            GgmlType::Q4_0 => {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|q| ((q & 0x0F) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|q| ((q >> 4) as i32 - 8) as f32 * d));
            }
            GgmlType::Q4_1 => {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|q| (q & 0x0F) as f32 * d + m));
                out.extend(qs.iter().map(|q| (q >> 4) as f32 * d + m));
            }
            GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let (d, m, h) = if ty == GgmlType::Q5_0 {
                    (f16_at(b, 0), 0.0, 2)
                } else {
                    (f16_at(b, 0), f16_at(b, 2), 4)
                };
                let qh = u32::from_le_bytes([b[h], b[h + 1], b[h + 2], b[h + 3]]);
                let qs = &b[h + 4..h + 20];
                let off = if ty == GgmlType::Q5_0 { 16 } else { 0 };
                let lo = |j: usize| (((qs[j] & 0x0F) as u32) | (((qh >> j) & 1) << 4)) as i32 - off;
                let hi =
                    |j: usize| (((qs[j] >> 4) as u32) | (((qh >> (j + 16)) & 1) << 4)) as i32 - off;
                out.extend((0..16).map(|j| lo(j) as f32 * d + m));
                out.extend((0..16).map(|j| hi(j) as f32 * d + m));
            }
            GgmlType::Q8_0 => {
                let d = f16_at(b, 0);
                out.extend(b[2..34].iter().map(|q| *q as i8 as f32 * d));
            }
            GgmlType::Q6K => {
                let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                let d = f16_at(b, 208);
                let mut y = [0f32; 256];
                for half in 0..2 {
                    let (ql, qh, sc, y) = (
                        &ql[64 * half..],
                        &qh[32 * half..],
                        &sc[8 * half..],
                        &mut y[128 * half..],
                    );
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        let s = |k: usize| d * sc[is + k] as i8 as f32;
                        y[l] = s(0) * q1 as f32;
                        y[l + 32] = s(2) * q2 as f32;
                        y[l + 64] = s(4) * q3 as f32;
                        y[l + 96] = s(6) * q4 as f32;
                    }
                }
                out.extend_from_slice(&y);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_0_block_by_hand() {
        // d = 0.5; byte j holds low nibble j (elements 0..16) and high nibble 15 − j (16..32).
        let mut b = h(0.5).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let v = dequantize(GgmlType::Q4_0, &b).unwrap();
        for j in 0..16 {
            assert_eq!(v[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(v[j + 16], ((15 - j) as f32 - 8.0) * 0.5);
        }
    }

    #[test]
    fn q4_1_block_by_hand() {
        let mut b = h(0.25).to_vec();
        b.extend(h(-1.5));
        b.extend((0..16u8).map(|j| (j * 7 % 16) | ((j % 5) << 4)));
        let v = dequantize(GgmlType::Q4_1, &b).unwrap();
        for j in 0..16u8 {
            assert_eq!(v[j as usize], (j * 7 % 16) as f32 * 0.25 - 1.5);
            assert_eq!(v[j as usize + 16], (j % 5) as f32 * 0.25 - 1.5);
        }
        // Two blocks in a row dequantise independently.
        let mut two = b.clone();
        two.extend(&b);
        assert_eq!(dequantize(GgmlType::Q4_1, &two).unwrap()[32..], v[..]);
        assert!(dequantize(GgmlType::Q4_1, &b[..19]).is_err());
    }

    #[test]
    fn q8_0_block_by_hand() {
        let mut b = h(0.125).to_vec();
        b.extend((0..32i32).map(|j| (j * 9 - 128) as i8 as u8));
        let v = dequantize(GgmlType::Q8_0, &b).unwrap();
        assert_eq!(v.len(), 32);
        for (j, x) in v.iter().enumerate() {
            assert_eq!(*x, ((j as i32 * 9 - 128) as i8) as f32 * 0.125);
        }
    }

    #[test]
    fn q5_blocks_by_hand() {
        // qh bit j is the 5th bit of element j; element j < 16 from the low nibble of qs[j],
        // element j + 16 from the high nibble.
        let qh: u32 = 0xA5C3_0F71;
        let qs: Vec<u8> = (0..16u8).map(|j| (j ^ 0x9) | ((j * 3 % 16) << 4)).collect();
        let q = |i: usize| -> i32 {
            let nib = if i < 16 { qs[i] & 0xF } else { qs[i - 16] >> 4 } as u32;
            (nib | (((qh >> i) & 1) << 4)) as i32
        };
        let mut b0 = h(2.0).to_vec();
        b0.extend(qh.to_le_bytes());
        b0.extend(&qs);
        let v0 = dequantize(GgmlType::Q5_0, &b0).unwrap();
        let mut b1 = h(2.0).to_vec();
        b1.extend(h(0.5));
        b1.extend(qh.to_le_bytes());
        b1.extend(&qs);
        let v1 = dequantize(GgmlType::Q5_1, &b1).unwrap();
        for i in 0..32 {
            assert_eq!(v0[i], (q(i) - 16) as f32 * 2.0, "q5_0 {i}");
            assert_eq!(v1[i], q(i) as f32 * 2.0 + 0.5, "q5_1 {i}");
        }
    }

    #[test]
    fn q6_k_block_by_hand() {
        // Element e = 128·half + 32·quarter + l, l < 32: its low nibble is ql[64·half + l + 32·(quarter & 1)]
        // (low nibble for quarters 0/1, high for 2/3), its high 2 bits qh[32·half + l] >> 2·quarter,
        // its scale sc[8·half + l/16 + 2·quarter].
        let ql: Vec<u8> = (0..128u32).map(|i| (i * 37 % 256) as u8).collect();
        let qh: Vec<u8> = (0..64u32).map(|i| (i * 91 % 256) as u8).collect();
        let sc: Vec<i8> = (0..16i32).map(|i| (i * 13 - 100) as i8).collect();
        let d = 0.0625f32;
        let mut b = ql.clone();
        b.extend(&qh);
        b.extend(sc.iter().map(|&s| s as u8));
        b.extend(h(d));
        assert_eq!(b.len(), 210);
        let v = dequantize(GgmlType::Q6K, &b).unwrap();
        assert_eq!(v.len(), 256);
        for (e, x) in v.iter().enumerate() {
            let (half, quarter, l) = (e / 128, (e % 128) / 32, e % 32);
            let byte = ql[64 * half + l + 32 * (quarter & 1)];
            let lo = if quarter < 2 { byte & 0xF } else { byte >> 4 };
            let hi = (qh[32 * half + l] >> (2 * quarter)) & 3;
            let q = (lo | (hi << 4)) as i32 - 32;
            let s = sc[8 * half + l / 16 + 2 * quarter] as f32;
            assert_eq!(*x, d * s * q as f32, "element {e}");
        }
    }
}
