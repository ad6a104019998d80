//! GGUF v3 writer (little-endian, 32-byte alignment unless set): metadata of every [`Value`]
//! type, the tensor directory, aligned data; and the F16 / Q8_0 encoders. The reader is
//! [`super::reader`];
//! block layouts follow ggml's `quantize_row_q8_0_ref` (32 values, f16 scale d = max|x|/127,
//! q = round(x/d)).

use super::dequant::GgmlType;
use super::reader::Value;
use half::f16;
use std::io::Write;
use std::path::Path;
use vpt_sdk::{Error, Result};

/// GGUF's default data-section alignment (`general.alignment` is written only for others).
const DEFAULT_ALIGN: usize = 32;

/// One tensor to write: GGUF name, torch shape (slowest axis first), type and encoded bytes.
struct Entry {
    name: String,
    shape: Vec<i64>,
    ty: GgmlType,
    bytes: Vec<u8>,
}

/// A GGUF file being assembled in memory, written by [`GgufWriter::write`].
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<Entry>,
    align: usize,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty file with the default 32-byte alignment.
    pub fn new() -> Self {
        GgufWriter {
            metadata: Vec::new(),
            tensors: Vec::new(),
            align: DEFAULT_ALIGN,
        }
    }

    /// An empty file whose data section is `align`-byte aligned (recorded as
    /// `general.alignment` when not the default).
    pub fn with_alignment(align: usize) -> Result<Self> {
        if align == 0 || !align.is_multiple_of(8) {
            return Err(Error::msg(format!(
                "GGUF alignment must be a positive multiple of 8, got {align}"
            )));
        }
        let mut w = Self::new();
        w.align = align;
        if align != DEFAULT_ALIGN {
            w.set("general.alignment", Value::U32(align as u32));
        }
        Ok(w)
    }

    /// Adds (or replaces) metadata `key`.
    pub fn set(&mut self, key: &str, value: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// Adds tensor `name` of torch `shape` from f32 `values` (row-major), encoded as `ty`
    /// (F32, F16 or Q8_0; Q8_0 needs a row length divisible by 32).
    pub fn tensor(
        &mut self,
        name: &str,
        shape: &[i64],
        ty: GgmlType,
        values: &[f32],
    ) -> Result<()> {
        let numel: i64 = shape.iter().product();
        if numel as usize != values.len() {
            return Err(Error::msg(format!(
                "GGUF tensor `{name}`: shape {shape:?} holds {numel} values, got {}",
                values.len()
            )));
        }
        let bytes = encode(name, shape, ty, values)?;
        self.tensors.push(Entry {
            name: name.to_string(),
            shape: shape.to_vec(),
            ty,
            bytes,
        });
        Ok(())
    }

    /// Writes the file to `path` (via a temporary file renamed into place).
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("gguf.part");
        let io = |e| Error::io(&tmp, e);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
        let mut head = b"GGUF".to_vec();
        head.extend(3u32.to_le_bytes());
        head.extend((self.tensors.len() as u64).to_le_bytes());
        head.extend((self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut head, k);
            head.extend(type_id(v).to_le_bytes());
            put_value(&mut head, v);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            put_str(&mut head, &t.name);
            head.extend((t.shape.len() as u32).to_le_bytes());
            for d in t.shape.iter().rev() {
                head.extend((*d as u64).to_le_bytes());
            }
            head.extend(t.ty.id().to_le_bytes());
            head.extend((offset as u64).to_le_bytes());
            offset = (offset + t.bytes.len()).next_multiple_of(self.align);
        }
        head.resize(head.len().next_multiple_of(self.align), 0);
        f.write_all(&head).map_err(io)?;
        for t in &self.tensors {
            f.write_all(&t.bytes).map_err(io)?;
            let pad = t.bytes.len().next_multiple_of(self.align) - t.bytes.len();
            f.write_all(&vec![0u8; pad]).map_err(io)?;
        }
        f.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }
}

/// The bytes of f32 `values` of torch `shape` encoded as `ty` (F32, F16 or Q8_0; Q8_0 needs a
/// row length divisible by 32); errors name tensor `name`.
pub fn encode(name: &str, shape: &[i64], ty: GgmlType, values: &[f32]) -> Result<Vec<u8>> {
    Ok(match ty {
        GgmlType::F32 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        GgmlType::F16 => values
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect(),
        GgmlType::Q8_0 => {
            let row = shape.last().copied().unwrap_or(1);
            if row % 32 != 0 {
                return Err(Error::msg(format!(
                    "GGUF tensor `{name}`: row length {row} is not a multiple of 32 (Q8_0)"
                )));
            }
            quantize_q8_0(values)
        }
        other => {
            return Err(Error::msg(format!(
                "GGUF tensor `{name}`: writing {other:?} is not supported (F32, F16, Q8_0)"
            )))
        }
    })
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// The GGUF value type id of `v` (arrays take their first element's type; empty ones u8).
fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::Str(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::Str(s) => put_str(out, s),
        Value::Array(a) => {
            out.extend(a.first().map_or(0, type_id).to_le_bytes());
            out.extend((a.len() as u64).to_le_bytes());
            for x in a {
                put_value(out, x);
            }
        }
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
    }
}

/// Q8_0 blocks of `v` (length a multiple of 32), as ggml's reference quantiser writes them.
pub fn quantize_q8_0(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() / 32 * 34);
    for blk in v.chunks(32) {
        let amax = blk.iter().fold(0f32, |a, x| a.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16::from_f32(d).to_le_bytes());
        out.extend(blk.iter().map(|x| (x * id).round() as i8 as u8));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::dequant::dequantize;
    use super::super::reader::Gguf;
    use super::*;

    #[test]
    fn written_file_reads_back_with_metadata_shapes_and_values() {
        let mut w = GgufWriter::new();
        w.set("general.architecture", Value::Str("llama".into()));
        w.set("llama.block_count", Value::U32(2));
        w.set("x.f", Value::F32(0.5));
        w.set("x.b", Value::Bool(true));
        w.set(
            "x.a",
            Value::Array(vec![Value::Str("a".into()), Value::Str("bc".into())]),
        );
        w.set("x.i", Value::Array(vec![Value::I32(-3), Value::I32(7)]));
        w.set("llama.block_count", Value::U32(3)); // replaces
        let v: Vec<f32> = (0..96).map(|i| (i as f32 - 40.0) / 7.0).collect();
        w.tensor("a", &[3, 32], GgmlType::F32, &v).unwrap();
        w.tensor("b", &[2, 48], GgmlType::F16, &v).unwrap();
        w.tensor("c", &[3, 32], GgmlType::Q8_0, &v).unwrap();
        w.tensor("d", &[5], GgmlType::F32, &v[..5]).unwrap();
        assert!(w.tensor("e", &[4, 24], GgmlType::Q8_0, &v).is_err());
        assert!(w.tensor("e", &[4, 32], GgmlType::F32, &v).is_err());
        let path = std::env::temp_dir().join(format!("vpt-gguf-w-{}.gguf", std::process::id()));
        w.write(&path).unwrap();
        let g = Gguf::open(&path).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.get("llama.block_count").unwrap(), &Value::U32(3));
        assert_eq!(g.get("x.f").unwrap(), &Value::F32(0.5));
        assert_eq!(g.get("x.b").unwrap(), &Value::Bool(true));
        assert_eq!(g.get("x.i").unwrap().as_array().unwrap()[0], Value::I32(-3));
        assert_eq!(
            g.get("x.a").unwrap().as_array().unwrap()[1].as_str(),
            Some("bc")
        );
        let back = |n: &str| Vec::<f32>::try_from(g.tensor(n).unwrap().view([-1])).unwrap();
        assert_eq!(g.info("b").unwrap().shape(), vec![2, 48]);
        assert_eq!(back("a"), v);
        assert_eq!(back("d"), v[..5]);
        for (x, y) in back("b").iter().zip(&v) {
            assert!((x - y).abs() <= y.abs() * 1e-3, "{x} vs {y}");
        }
        let q = back("c");
        let want = dequantize(GgmlType::Q8_0, &quantize_q8_0(&v)).unwrap();
        assert_eq!(q, want);
        for (blk, x) in v.chunks(32).zip(q.chunks(32)) {
            let d = blk.iter().fold(0f32, |a, x| a.max(x.abs())) / 127.0;
            for (a, b) in blk.iter().zip(x) {
                assert!((a - b).abs() <= 0.51 * d + 1e-3 * a.abs(), "{a} vs {b}");
            }
        }
        std::fs::remove_file(&path).unwrap();
    }
}
