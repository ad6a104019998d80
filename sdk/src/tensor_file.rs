//! Tensor files in safetensors, the one on-disk tensor format of host checkpoints and plugin
//! caches. A safetensors file is data only (a JSON header and raw bytes): reading one never runs
//! code, unlike a TorchScript/pickle archive (`Tensor::load_multi`), which runs any
//! `__setstate__` stored in it. Files are fsynced and described by a [`FileDigest`] (size and
//! SHA-256) that [`read`] checks before parsing, so a flipped byte or a torn file is refused.

use crate::{Error, Result, TchContext, TensorMap};
use safetensors::{tensor::View, Dtype};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::{borrow::Cow, io::Read, path::Path};
use tch::{Device, Kind, Tensor};

/// The safetensors metadata key holding the tensors' order (a JSON list of names).
const ORDER_KEY: &str = "vpt.order";

/// Size and SHA-256 of a file, as recorded when it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    /// Length in bytes.
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the whole file.
    pub sha256: String,
}

impl FileDigest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> FileDigest {
        FileDigest {
            bytes: data.len() as u64,
            sha256: hex(&Sha256::digest(data)),
        }
    }

    /// Reads `path` whole and returns its bytes if they match this digest, else an error
    /// saying what differs.
    pub fn read_verified(&self, path: &Path) -> Result<Vec<u8>> {
        let data = std::fs::read(path).map_err(|e| io(path, e))?;
        let got = FileDigest::of(&data);
        if got.bytes != self.bytes {
            return Err(Error::Msg(format!(
                "{}: {} bytes, {} expected (truncated or replaced)",
                path.display(),
                got.bytes,
                self.bytes
            )));
        }
        if got.sha256 != self.sha256 {
            return Err(Error::Msg(format!(
                "{}: checksum mismatch (the file was modified or corrupted after it was written)",
                path.display()
            )));
        }
        Ok(data)
    }
}

/// Writes `tensors` to `path` as safetensors (tensors are copied to the CPU first), fsyncs the
/// file and returns its digest. Errors (disk full, an unsupported dtype) name the file; nothing
/// here can abort the process.
pub fn write(path: &Path, tensors: &TensorMap) -> Result<FileDigest> {
    let views = tensors
        .iter()
        .map(|(name, t)| Ok((name.to_string(), CpuView::new(name, t)?)))
        .collect::<Result<Vec<_>>>()?;
    // safetensors keeps no order; the map's order is part of what was saved.
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n).collect();
    let order = serde_json::to_string(&names).map_err(|e| Error::Msg(e.to_string()))?;
    let meta = Some([(ORDER_KEY.to_string(), order)].into());
    safetensors::serialize_to_file(views, &meta, path).map_err(|e| match e {
        safetensors::SafeTensorError::IoError(source) => io(path, source),
        e => Error::Msg(format!("{}: writing tensors: {e:?}", path.display())),
    })?;
    digest_and_sync(path)
}

/// Reads the safetensors file at `path`, refusing it unless it matches `expected`. Tensors are
/// created on `device`.
pub fn read(path: &Path, expected: &FileDigest, device: Device) -> Result<TensorMap> {
    let data = expected.read_verified(path)?;
    parse(path, &data, device)
}

/// Parses safetensors bytes (read from `path`, named in errors) into tensors on `device`.
pub fn parse(path: &Path, data: &[u8], device: Device) -> Result<TensorMap> {
    let bad = |m: String| Error::Msg(format!("{}: {m}", path.display()));
    let st = safetensors::SafeTensors::deserialize(data)
        .map_err(|e| bad(format!("not a valid safetensors file: {e:?}")))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(data)
        .map_err(|e| bad(format!("not a valid safetensors file: {e:?}")))?;
    let saved_order: Option<Vec<String>> = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(ORDER_KEY))
        .and_then(|o| serde_json::from_str(o).ok());
    let names = match saved_order {
        Some(names) => names,
        None => {
            let mut n: Vec<String> = st.names().into_iter().cloned().collect();
            n.sort();
            n
        }
    };
    let mut out = TensorMap::new();
    for name in names {
        let view = st
            .tensor(&name)
            .map_err(|e| bad(format!("tensor `{name}`: {e:?}")))?;
        let kind = kind_of(view.dtype()).ok_or_else(|| {
            bad(format!(
                "tensor `{name}` has unsupported dtype {:?}",
                view.dtype()
            ))
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind)
            .and_then(|t| t.f_to_device(device))
            .op(&format!("reading tensor `{name}` from {}", path.display()))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// The digest file kept beside a standalone tensor file: `NAME.digest.json`.
pub fn digest_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".digest.json");
    path.with_file_name(name)
}

/// Writes a standalone tensor file (a cache): the tensors to a temporary file, fsynced and
/// renamed to `path`, then its digest beside it ([`digest_path`]).
pub fn save_verified(path: &Path, tensors: &TensorMap) -> Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let digest = write(&tmp, tensors).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    let json = serde_json::to_vec(&digest).map_err(|e| Error::Msg(e.to_string()))?;
    let dp = digest_path(path);
    std::fs::write(&dp, json).map_err(|e| io(&dp, e))
}

/// Reads a standalone tensor file onto `device`, checked against its digest file when there
/// is one (a file from elsewhere may come without; safetensors is data only either way).
pub fn load_verified(path: &Path, device: Device) -> Result<TensorMap> {
    let dp = digest_path(path);
    match std::fs::read(&dp) {
        Ok(d) => {
            let digest: FileDigest = serde_json::from_slice(&d)
                .map_err(|e| Error::Msg(format!("{}: {e}", dp.display())))?;
            read(path, &digest, device)
        }
        Err(_) => {
            let data = std::fs::read(path).map_err(|e| io(path, e))?;
            parse(path, &data, device)
        }
    }
}

/// Streams `path` through SHA-256, fsyncs it, and returns its digest.
pub fn digest_and_sync(path: &Path) -> Result<FileDigest> {
    let mut f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bytes += n as u64;
    }
    f.sync_all().map_err(|e| io(path, e))?;
    Ok(FileDigest {
        bytes,
        sha256: hex(&h.finalize()),
    })
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        _ => return None,
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    [
        Kind::Bool,
        Kind::Uint8,
        Kind::Int8,
        Kind::Int16,
        Kind::Int,
        Kind::Int64,
        Kind::BFloat16,
        Kind::Half,
        Kind::Float,
        Kind::Double,
    ]
    .into_iter()
    .find(|&k| dtype_of(k) == Some(dtype))
}

/// A detached, contiguous CPU copy of a tensor, serialised lazily one tensor at a time.
struct CpuView {
    tensor: Tensor,
    dtype: Dtype,
    shape: Vec<usize>,
}

impl CpuView {
    fn new(name: &str, t: &Tensor) -> Result<CpuView> {
        let op = format!("preparing tensor `{name}` for writing");
        let kind = t.f_kind().op(&op)?;
        let dtype = dtype_of(kind).ok_or_else(|| Error::Tensor {
            name: name.into(),
            message: format!("dtype {kind:?} cannot be stored in safetensors"),
        })?;
        let tensor = t
            .f_detach()
            .and_then(|t| t.f_to_device(Device::Cpu))
            .and_then(|t| t.f_contiguous())
            .op(&op)?;
        let shape = tensor.size().iter().map(|&d| d as usize).collect();
        Ok(CpuView {
            tensor,
            dtype,
            shape,
        })
    }
}

impl View for CpuView {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        let mut data = vec![0u8; self.data_len()];
        self.tensor
            .f_copy_data_u8(&mut data, self.tensor.numel())
            .expect("copying a contiguous CPU tensor into a buffer of its size cannot fail");
        data.into()
    }
    fn data_len(&self) -> usize {
        self.tensor.numel() * self.dtype.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let dir = std::env::temp_dir().join(format!("vpt-tensor-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.safetensors");
        let mut m = TensorMap::new();
        m.insert("s", Tensor::from(2.5f64));
        m.insert("a/w", Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([3, 1]));
        m.insert("b", Tensor::from_slice(&[7i64]));
        let d = write(&p, &m).unwrap();
        let back = read(&p, &d, Device::Cpu).unwrap();
        assert_eq!(back.names(), m.names(), "the order is kept");
        assert_eq!(back.get("a/w").unwrap().size(), vec![3, 1]);
        assert_eq!(back.get("b").unwrap().int64_value(&[0]), 7);
        assert_eq!(back.get("s").unwrap().double_value(&[]), 2.5);
        // A flipped byte is refused by the checksum.
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        let e = read(&p, &d, Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
        // A truncated file is refused by its size, and by the parser without a digest.
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let e = read(&p, &d, Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let e = parse(&p, &bytes[..bytes.len() / 2], Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a valid safetensors file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
