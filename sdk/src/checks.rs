//! Checks a plugin runs on what a user hands it: sizes bounded where the config is validated
//! (so an absurd value is refused naming its field instead of reaching an allocation that
//! aborts the process), and data files that are regular files (so a named pipe cannot block a
//! run forever).

use crate::{Error, Result};
use std::{fmt::Display, path::Path};

/// The environment variable that lets data files be FIFOs, character devices or other
/// non-regular files (`VPT_ALLOW_SPECIAL_FILES=1`); by default they are refused.
pub const ALLOW_SPECIAL_FILES_VAR: &str = "VPT_ALLOW_SPECIAL_FILES";

/// Refuses `value` outside `[min, max]`, naming `field`:
/// "config field `hidden`: 1000000000000 is too large (at most 65536)".
pub fn check_size<T: PartialOrd + Display + Copy>(
    field: impl Into<String>,
    value: T,
    min: T,
    max: T,
) -> Result<()> {
    if value < min {
        Err(Error::config(
            field,
            format!("{value} is too small (at least {min})"),
        ))
    } else if value > max {
        Err(Error::config(
            field,
            format!("{value} is too large (at most {max})"),
        ))
    } else {
        Ok(())
    }
}

/// Refuses a combination of sizes whose tensor would hold more than `max` elements: `factors`
/// are `(name, value)` pairs multiplied together (e.g. `batch_size × seq_len × vocab` logits),
/// and the error names every factor and the product.
pub fn check_elements(field: impl Into<String>, factors: &[(&str, u64)], max: u64) -> Result<()> {
    let product = factors
        .iter()
        .fold(1u128, |p, (_, v)| p.saturating_mul(u128::from(*v)));
    if product <= u128::from(max) {
        return Ok(());
    }
    let names: Vec<String> = factors.iter().map(|(n, v)| format!("{n} {v}")).collect();
    Err(Error::config(
        field,
        format!(
            "{} = {product} elements ({:.1} GiB as f32) is too large (at most {max} elements)",
            names.join(" × "),
            product as f64 * 4.0 / f64::from(1u32 << 30)
        ),
    ))
}

/// Refuses a data file that is not a regular file (a FIFO would block the run forever, a device
/// would never end), naming the path, unless [`ALLOW_SPECIAL_FILES_VAR`] is set to `1`.
/// Symbolic links are followed. A missing file is an I/O error naming the path.
pub fn regular_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() || std::env::var(ALLOW_SPECIAL_FILES_VAR).is_ok_and(|v| v == "1") {
        return Ok(());
    }
    let what = file_kind(&meta);
    Err(Error::msg(format!(
        "{}: is {what}, not a regular file; data files must be regular files \
         (set {ALLOW_SPECIAL_FILES_VAR}=1 to read it anyway)",
        path.display()
    )))
}

/// What the file described by `meta` is, in words: "a regular file", "a directory", "a named
/// pipe (FIFO)", "a character device", …
pub fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a named pipe (FIFO)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_name_the_field_and_the_bound() {
        check_size("hidden", 32i64, 1, 65536).unwrap();
        let e = check_size("hidden", 1_000_000_000_000i64, 1, 65536)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`hidden`") && e.contains("at most 65536"), "{e}");
        let e = check_size("n", 0usize, 1, 8).unwrap_err().to_string();
        assert!(e.contains("at least 1"), "{e}");
        check_elements("c", &[("a", 1 << 20), ("b", 1 << 10)], 1 << 30).unwrap();
        let e = check_elements("c", &[("a", 1 << 20), ("b", 1 << 20)], 1 << 30)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a 1048576 × b 1048576"), "{e}");
    }

    #[test]
    fn a_directory_is_not_a_data_file() {
        let e = regular_file(Path::new("/")).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        let e = regular_file(Path::new("/surely/missing.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/surely/missing.jsonl"), "{e}");
    }
}
