//! GGUF (v2/v3, little-endian) file reader: the header, metadata of every value type and the
//! tensor directory are parsed on [`Gguf::open`]; tensor data is read on demand by seeking
//! ([`Gguf::tensor`]), so the file is never held in memory as a whole.
//!
//! Format reference: ggml `docs/gguf.md`. GGUF dims list the fastest axis first (`ne[0]` =
//! columns), so a torch shape is the reverse.

use super::dequant::{dequantize, GgmlType};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tch::Tensor;
use vpt_sdk::{Error, Result, TchContext};

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// type 0
    U8(u8),
    /// type 1
    I8(i8),
    /// type 2
    U16(u16),
    /// type 3
    I16(i16),
    /// type 4
    U32(u32),
    /// type 5
    I32(i32),
    /// type 6
    F32(f32),
    /// type 7
    Bool(bool),
    /// type 8
    Str(String),
    /// type 9 (homogeneous in practice; not enforced)
    Array(Vec<Value>),
    /// type 10
    U64(u64),
    /// type 11
    I64(i64),
    /// type 12
    F64(f64),
}

impl Value {
    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// The value as a float, when it is any number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// GGUF tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dims as stored: fastest axis first.
    pub dims: Vec<u64>,
    /// Raw ggml type id.
    pub type_id: u32,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The torch shape (dims reversed).
    pub fn shape(&self) -> Vec<i64> {
        self.dims.iter().rev().map(|&d| d as i64).collect()
    }
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// An opened GGUF file: metadata and tensor directory in memory, tensor data read on demand.
#[derive(Debug)]
pub struct Gguf {
    /// Where it was read from (for error messages).
    pub path: PathBuf,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata key → value, sorted by key.
    pub metadata: BTreeMap<String, Value>,
    /// Tensor directory in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section (`general.alignment`, default 32).
    pub alignment: u64,
    data_start: u64,
    file_len: u64,
    file: Mutex<File>,
}

/// A little-endian cursor over the file header whose errors name the file and the position.
struct Reader<'a, R> {
    r: R,
    pos: u64,
    len: u64,
    path: &'a Path,
}

impl<R: Read> Reader<'_, R> {
    fn err(&self, what: &str) -> Error {
        Error::msg(format!(
            "{}: GGUF byte {}: {what}",
            self.path.display(),
            self.pos
        ))
    }
    fn take(&mut self, n: u64) -> Result<Vec<u8>> {
        if self.pos.checked_add(n).is_none_or(|e| e > self.len) {
            return Err(self.err(&format!(
                "truncated (wanted {n} more bytes, file has {})",
                self.len
            )));
        }
        let mut buf = vec![0u8; n as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|e| self.err(&format!("read failed: {e}")))?;
        self.pos += n;
        Ok(buf)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N as u64)?.try_into().expect("length checked"))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u64()?;
        let s = self.take(n)?;
        String::from_utf8(s).map_err(|_| self.err("string is not UTF-8"))
    }
    fn value(&mut self, ty: u32, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.arr::<1>()?[0]),
            1 => Value::I8(self.arr::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr()?)),
            3 => Value::I16(i16::from_le_bytes(self.arr()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.arr()?)),
            6 => Value::F32(f32::from_le_bytes(self.arr()?)),
            7 => Value::Bool(self.arr::<1>()?[0] != 0),
            8 => Value::Str(self.string()?),
            9 => {
                if depth > 4 {
                    return Err(self.err("arrays nested too deeply"));
                }
                let ety = self.u32()?;
                let n = self.u64()?;
                if n > self.len - self.pos {
                    return Err(self.err(&format!("array length {n} exceeds the file")));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(ety, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.arr()?)),
            12 => Value::F64(f64::from_le_bytes(self.arr()?)),
            t => return Err(self.err(&format!("unknown metadata value type {t}"))),
        })
    }
}

impl Gguf {
    /// Opens `path` and parses its header, metadata and tensor directory (checking every
    /// tensor's type, alignment and extent against the file); tensor data stays on disk.
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf> {
        let path = path.as_ref();
        let io = |e| Error::io(path, e);
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut r = Reader {
            r: BufReader::new(file.try_clone().map_err(io)?),
            pos: 0,
            len,
            path,
        };
        if r.take(4)? != b"GGUF" {
            return Err(r.err("not a GGUF file (magic is not `GGUF`)"));
        }
        let version = r.u32()?;
        if version != 2 && version != 3 {
            return Err(r.err(&format!(
                "unsupported GGUF version {version} (need 2 or 3; a huge number means a big-endian file)"
            )));
        }
        let n_tensors = r.u64()?;
        let n_kv = r.u64()?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string()?;
            let ty = r.u32()?;
            let v = r
                .value(ty, 0)
                .map_err(|e| Error::msg(format!("{e} (metadata key `{key}`)")))?;
            metadata.insert(key, v);
        }
        let mut tensors = Vec::new();
        for _ in 0..n_tensors {
            let name = r.string()?;
            let nd = r.u32()?;
            if nd > 4 {
                return Err(r.err(&format!("tensor `{name}` has {nd} dims (max 4)")));
            }
            let dims = (0..nd).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
            let type_id = r.u32()?;
            let offset = r.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                type_id,
                offset,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => v.as_u64().filter(|a| *a > 0).ok_or_else(|| {
                Error::msg(format!(
                    "{}: metadata `general.alignment` is not a positive integer",
                    path.display()
                ))
            })?,
        };
        let g = Gguf {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            alignment,
            data_start: r.pos.div_ceil(alignment) * alignment,
            file_len: len,
            file: Mutex::new(file),
        };
        for t in &g.tensors {
            g.extent(t)?; // validates type, alignment and bounds up front
        }
        Ok(g)
    }

    /// An error naming the file.
    pub(crate) fn err(&self, what: impl std::fmt::Display) -> Error {
        Error::msg(format!("{}: {what}", self.path.display()))
    }

    /// The metadata value under `key`, or an error naming the file and key.
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.metadata
            .get(key)
            .ok_or_else(|| self.err(format!("missing metadata key `{key}`")))
    }

    /// The unsigned integer under `key`, or an error naming the file and key.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)?
            .as_u64()
            .ok_or_else(|| self.err(format!("metadata `{key}` is not an unsigned integer")))
    }

    /// The number under `key`, or an error naming the file and key.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.get(key)?
            .as_f64()
            .ok_or_else(|| self.err(format!("metadata `{key}` is not a number")))
    }

    /// The directory entry of tensor `name`.
    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| self.err(format!("no tensor `{name}`")))
    }

    /// The type, absolute file offset and byte length of one tensor, checked against the file.
    fn extent(&self, t: &TensorInfo) -> Result<(GgmlType, u64, u64)> {
        let ty = GgmlType::from_id(t.type_id).ok_or_else(|| {
            self.err(format!(
                "tensor `{}`: unsupported ggml type {}",
                t.name, t.type_id
            ))
        })?;
        let (blk, bytes_per) = ty.block();
        let ne0 = t.dims.first().copied().unwrap_or(1);
        if ne0 % blk as u64 != 0 {
            return Err(self.err(format!(
                "tensor `{}`: row length {ne0} is not a multiple of {blk} ({ty:?})",
                t.name
            )));
        }
        if t.offset.checked_rem(self.alignment) != Some(0) {
            return Err(self.err(format!(
                "tensor `{}`: offset {} is not {}-aligned",
                t.name, t.offset, self.alignment
            )));
        }
        let len = t.numel() / blk as u64 * bytes_per as u64;
        let start = self.data_start + t.offset;
        if start.checked_add(len).is_none_or(|end| end > self.file_len) {
            return Err(self.err(format!(
                "tensor `{}`: data [{start}, {}) runs past the end of the file",
                t.name,
                start.saturating_add(len)
            )));
        }
        Ok((ty, start, len))
    }

    /// The type and raw bytes of one tensor, read from the file by seeking.
    fn raw(&self, t: &TensorInfo) -> Result<(GgmlType, Vec<u8>)> {
        let (ty, start, len) = self.extent(t)?;
        let mut buf = vec![0u8; len as usize];
        let mut f = self
            .file
            .lock()
            .map_err(|_| self.err("file handle poisoned by an earlier panic"))?;
        f.seek(SeekFrom::Start(start))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| self.err(format!("tensor `{}`: read failed: {e}", t.name)))?;
        Ok((ty, buf))
    }

    /// Tensor `name` (GGUF name) dequantised to f32, in torch shape (dims reversed), on CPU.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self.info(name)?;
        let (ty, raw) = self.raw(info)?;
        let v = dequantize(ty, &raw).map_err(|e| self.err(format!("tensor `{name}`: {e}")))?;
        Tensor::from_slice(&v)
            .f_view(info.shape().as_slice())
            .op(&format!("{}: tensor `{name}`", self.path.display()))
    }

    /// The architecture prefix of the metadata keys (`general.architecture`).
    pub fn architecture(&self) -> Result<&str> {
        self.get("general.architecture")?
            .as_str()
            .ok_or_else(|| self.err("metadata `general.architecture` is not a string"))
    }
}
