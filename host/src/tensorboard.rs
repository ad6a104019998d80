//! TensorBoard event files beside `metrics.jsonl`: every number of every record, as scalars.
//!
//! The format is TensorFlow's documented one, encoded by hand (no crate needed): a file of
//! TFRecords (u64 length, masked CRC32C of the length, the bytes, masked CRC32C of the bytes),
//! each an `Event` protobuf (`wall_time` = 1, `step` = 2, `file_version` = 3, `summary` = 5)
//! whose `Summary` holds `Value`s (`tag` = 1, `simple_value` = 2). Each process writes its own
//! file (`events.out.tfevents.<unix time>.<host>.<pid>`); after a resume TensorBoard drops the
//! older file's steps past the restart (its `purge_orphaned_data`).

use crate::{records::Record, Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The event file this process writes in `run_dir`.
pub fn event_file(run_dir: &Path) -> PathBuf {
    static NAME: OnceLock<String> = OnceLock::new();
    let name = NAME.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        format!("events.out.tfevents.{now}.{host}.{}", std::process::id())
    });
    run_dir.join(name)
}

/// Appends `record`'s scalars to this process's event file in `run_dir` (creating it with
/// the `brain.Event:2` header).
pub fn append(run_dir: &Path, record: &Record) -> Result<()> {
    let path = event_file(run_dir);
    let mut out = Vec::new();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    if !crate::fileio::present(&path) {
        frame(&mut out, &event(wall, 0, Some("brain.Event:2"), &[]));
    }
    frame(
        &mut out,
        &event(wall, record.step(), None, &scalars(record)),
    );
    let mut f =
        crate::fileio::open_nofollow(&path, std::fs::OpenOptions::new().create(true).append(true))?;
    f.write_all(&out).map_err(|e| Error::io(&path, e))
}

/// Every number of `record` (booleans as 0/1), tagged `train/…`, `meta/…` or `eval/…`; the
/// step is the event's step, not a scalar.
pub fn scalars(record: &Record) -> Vec<(String, f32)> {
    let (section, value) = match record {
        Record::Train(r) => ("train", serde_json::to_value(r)),
        Record::Eval(r) => ("eval", serde_json::to_value(r)),
    };
    let mut out = Vec::new();
    if let Ok(v) = value {
        flatten(section, &v, &mut out);
    }
    out
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, f32)>) {
    use serde_json::Value as J;
    match v {
        J::Object(m) => {
            for (k, x) in m {
                let prefix = match (prefix, k.as_str()) {
                    (_, "step") => continue,
                    ("train", "meta") if x.is_null() => continue, // no meta step

                    ("train", "meta") => "meta".to_string(),
                    ("eval", "metrics") => "eval".to_string(),
                    (p, k) => format!("{p}/{k}"),
                };
                flatten(&prefix, x, out);
            }
        }
        J::Number(n) => out.push((prefix.to_string(), n.as_f64().unwrap_or(f64::NAN) as f32)),
        J::Bool(b) => out.push((prefix.to_string(), *b as u8 as f32)),
        J::Null => out.push((prefix.to_string(), f32::NAN)), // serde_json writes NaN as null
        _ => {}
    }
}

/// An encoded `Event`.
fn event(
    wall_time: f64,
    step: u64,
    file_version: Option<&str>,
    values: &[(String, f32)],
) -> Vec<u8> {
    let mut e = Vec::new();
    e.push(1 << 3 | 1); // wall_time: double
    e.extend(wall_time.to_le_bytes());
    e.push(2 << 3); // step: int64 varint
    varint(&mut e, step);
    if let Some(v) = file_version {
        bytes_field(&mut e, 3, v.as_bytes());
    }
    if !values.is_empty() {
        let mut summary = Vec::new();
        for (tag, x) in values {
            let mut value = Vec::new();
            bytes_field(&mut value, 1, tag.as_bytes());
            value.push(2 << 3 | 5); // simple_value: float
            value.extend(x.to_le_bytes());
            bytes_field(&mut summary, 1, &value);
        }
        bytes_field(&mut e, 5, &summary);
    }
    e
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, data: &[u8]) {
    varint(out, field << 3 | 2);
    varint(out, data.len() as u64);
    out.extend(data);
}

/// One TFRecord: length, masked CRC of the length, data, masked CRC of the data.
fn frame(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend(len);
    out.extend(masked_crc(&len).to_le_bytes());
    out.extend(data);
    out.extend(masked_crc(data).to_le_bytes());
}

/// TFRecord's masked CRC32C: rotate right by 15, add 0xa282ead8.
fn masked_crc(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), bitwise.
fn crc32c(data: &[u8]) -> u32 {
    static TABLE: OnceLock<[u32; 256]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, b| {
        table[((c ^ *b as u32) & 0xFF) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{EvalRecord, MetaRecord, TrainRecord};

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn every_number_of_a_record_becomes_a_scalar() {
        let r = Record::Train(TrainRecord {
            step: 7,
            seconds: 1.5,
            lr: 0.01,
            pretrain_loss: 2.0,
            meta: Some(MetaRecord {
                value: 0.1,
                cos: 0.2,
                g_down_norm: 3.0,
                g_pre_norm: 4.0,
                regularizer: 0.0,
                skipped: true,
                ..MetaRecord::default()
            }),
            metrics: Default::default(),
        });
        let s = scalars(&r);
        let no_meta = Record::Train(TrainRecord {
            meta: None,
            ..match &r {
                Record::Train(t) => t.clone(),
                _ => unreachable!(),
            }
        });
        assert_eq!(scalars(&no_meta).len(), 3, "{:?}", scalars(&no_meta));
        let get = |t: &str| s.iter().find(|(k, _)| k == t).map(|(_, v)| *v);
        assert_eq!(get("train/pretrain_loss"), Some(2.0));
        assert_eq!(get("train/lr"), Some(0.01));
        assert_eq!(get("train/seconds"), Some(1.5));
        assert_eq!(get("meta/cos"), Some(0.2));
        assert_eq!(get("meta/skipped"), Some(1.0));
        assert_eq!(get("train/step"), None);
        let e = Record::Eval(EvalRecord {
            step: 3,
            seconds: 2.0,
            metrics: [
                ("pass@1".to_string(), 0.5),
                ("general_loss".into(), f64::NAN),
            ]
            .into_iter()
            .collect(),
        });
        let s = scalars(&e);
        assert!(s.contains(&("eval/pass@1".into(), 0.5)));
        assert!(s
            .iter()
            .any(|(k, v)| k == "eval/general_loss" && v.is_nan()));
        assert!(s.contains(&("eval/seconds".into(), 2.0)));
    }

    #[test]
    fn frames_carry_lengths_and_masked_crcs() {
        let mut out = Vec::new();
        let data = event(1.0, 5, None, &[("a".into(), 1.0)]);
        frame(&mut out, &data);
        assert_eq!(out.len(), 8 + 4 + data.len() + 4);
        assert_eq!(
            u64::from_le_bytes(out[..8].try_into().unwrap()),
            data.len() as u64
        );
        assert_eq!(
            u32::from_le_bytes(out[8..12].try_into().unwrap()),
            masked_crc(&out[..8])
        );
        assert_eq!(&out[12..12 + data.len()], &data[..]);
        let tail = &out[12 + data.len()..];
        assert_eq!(
            u32::from_le_bytes(tail.try_into().unwrap()),
            masked_crc(&data)
        );
    }
}
