//! Fashion-MNIST from the Debian package `dataset-fashion-mnist`: a gzip'd IDX reader.

use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use vpt_sdk::{Error, Result};

/// Where Debian's `dataset-fashion-mnist` installs the files.
pub const DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Side of one Fashion-MNIST image.
pub const SIDE: usize = 28;
/// Number of Fashion-MNIST classes.
pub const CLASSES: usize = 10;

/// One split of Fashion-MNIST: `n` 28×28 grey images (row-major u8) and their labels (0..10).
#[derive(Debug)]
pub struct FashionSplit {
    /// `n * 784` bytes, image `i` at `[i*784, (i+1)*784)`.
    pub images: Vec<u8>,
    /// `n` labels in 0..10.
    pub labels: Vec<u8>,
}

impl FashionSplit {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// The 784 pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * SIDE * SIDE..(i + 1) * SIDE * SIDE]
    }
}

/// Both splits of Fashion-MNIST.
#[derive(Debug)]
pub struct FashionMnist {
    /// 60 000 training images.
    pub train: FashionSplit,
    /// 10 000 test images.
    pub test: FashionSplit,
}

/// Reads an IDX file (optionally gzip'd, by extension): returns its dims and raw u8 payload.
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    vpt_sdk::checks::regular_file(path)?;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    let gz = path.extension().is_some_and(|e| e == "gz");
    let res = if gz {
        GzDecoder::new(file).read_to_end(&mut bytes)
    } else {
        std::io::BufReader::new(file).read_to_end(&mut bytes)
    };
    res.map_err(|e| Error::io(path, e))?;
    parse_idx(&bytes).map_err(|m| Error::data(path.display().to_string(), 1, m))
}

/// Parses IDX bytes: magic `0 0 0x08 ndim`, `ndim` big-endian u32 dims, then u8 data.
pub fn parse_idx(bytes: &[u8]) -> std::result::Result<(Vec<usize>, Vec<u8>), String> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err("not an IDX file (bad magic)".into());
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "IDX element type 0x{:02x} unsupported (want 0x08, u8)",
            bytes[2]
        ));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err("IDX header truncated".into());
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap_or([0; 4])) as usize
        })
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() - header != n {
        return Err(format!(
            "IDX payload has {} bytes, dims {:?} need {n}",
            bytes.len() - header,
            dims
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
}

fn load_split(dir: &Path, prefix: &str) -> Result<FashionSplit> {
    let ip = dir.join(format!("{prefix}-images-idx3-ubyte.gz"));
    let lp = dir.join(format!("{prefix}-labels-idx1-ubyte.gz"));
    for p in [&ip, &lp] {
        if !p.exists() {
            return Err(Error::msg(format!(
                "Fashion-MNIST file {} is missing: install the Debian package `dataset-fashion-mnist` \
                 (`sudo apt-get install dataset-fashion-mnist`, or `scripts/setup.sh data`), or set \
                 task.config.data_dir to a folder holding the four *-ubyte.gz files",
                p.display()
            )));
        }
    }
    let (idims, images) = read_idx(&ip)?;
    let (ldims, labels) = read_idx(&lp)?;
    if idims.len() != 3 || idims[1] != SIDE || idims[2] != SIDE {
        return Err(Error::data(
            ip.display().to_string(),
            1,
            format!("want dims (n,28,28), got {idims:?}"),
        ));
    }
    if ldims != [idims[0]] {
        return Err(Error::data(
            lp.display().to_string(),
            1,
            format!("{} labels for {} images", ldims[0], idims[0]),
        ));
    }
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= CLASSES) {
        return Err(Error::data(
            lp.display().to_string(),
            1,
            format!("label {bad} out of range 0..10"),
        ));
    }
    Ok(FashionSplit { images, labels })
}

/// Decoded datasets by folder, shared by every task of the process.
type DataCache = Mutex<Vec<(PathBuf, Arc<FashionMnist>)>>;

/// Loads Fashion-MNIST from `dir`, once per process per folder (the decoded data is shared).
pub fn load(dir: &Path) -> Result<Arc<FashionMnist>> {
    static CACHE: OnceLock<DataCache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    let mut guard = cache
        .lock()
        .map_err(|_| Error::msg("Fashion-MNIST cache poisoned"))?;
    if let Some((_, d)) = guard.iter().find(|(p, _)| p == dir) {
        return Ok(d.clone());
    }
    let data = Arc::new(FashionMnist {
        train: load_split(dir, "train")?,
        test: load_split(dir, "t10k")?,
    });
    guard.push((dir.to_path_buf(), data.clone()));
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_idx_and_rejects_bad_headers() {
        let mut b = vec![0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        b.extend([1, 2, 3, 4, 5, 6]);
        let (dims, data) = parse_idx(&b).unwrap();
        assert_eq!(dims, vec![2, 3]);
        assert_eq!(data, vec![1, 2, 3, 4, 5, 6]);
        assert!(parse_idx(&b[..b.len() - 1])
            .unwrap_err()
            .contains("payload"));
        assert!(parse_idx(&[1, 0, 8, 1]).unwrap_err().contains("magic"));
    }

    #[test]
    fn missing_folder_names_the_debian_package() {
        let e = load(Path::new("/nonexistent/fmnist"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dataset-fashion-mnist"), "{e}");
    }

    #[test]
    fn loads_the_installed_dataset() {
        let d = load(Path::new(DEFAULT_DIR)).unwrap();
        assert_eq!(d.train.len(), 60_000);
        assert_eq!(d.test.len(), 10_000);
        assert_eq!(d.train.image(0).len(), 784);
    }
}
