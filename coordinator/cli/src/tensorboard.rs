//! `advsweep export tensorboard SWEEP --out DIR`: TensorBoard event files, one run directory
//! per target (`DIR/<model>-<defense>[-eps<k>_255]-s<seed>/`, see [`super::trackers`]), so
//! `tensorboard --logdir DIR` shows the sweep's learning curves and its cells' accuracy,
//! success rate and perturbation norms against ε, with the target's hyperparameters in the
//! HParams tab.
//!
//! The file is what TensorFlow's summary writer makes: TFRecords (a little-endian u64 length,
//! its masked CRC-32C, the bytes, their masked CRC-32C) of `tensorboard.Event` messages — a
//! `brain.Event:2` file version first, then an HParams session-start summary, then scalar
//! summaries (`simple_value`). The messages are encoded with prost from the structs below (the
//! fields and numbers of tensorboard's `event.proto`, `summary.proto`, the HParams plugin's
//! `plugin_data.proto` and `google/protobuf/struct.proto`, only those used).
//!
//! Writing again replaces the event files an earlier export left in those directories (only
//! ours: `*.advsweep`), so TensorBoard never sees a sweep twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use prost::Message as _;

use super::trackers::{self, EpsilonSteps, Point, Target, TrackerArgs};

/// The file version TensorFlow's writers put first.
const FILE_VERSION: &str = "brain.Event:2";
/// Our event files' suffix (after `events.out.tfevents.<secs>.<host>`).
const SUFFIX: &str = ".advsweep";

#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(message, optional, tag = "9")]
    metadata: Option<SummaryMetadata>,
    /// A oneof, so that a 0.0 is written (a plain proto3 float of 0 would not be, and the
    /// reader would see no value at all).
    #[prost(oneof = "Scalar", tags = "2")]
    value: Option<Scalar>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Scalar {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
}

#[derive(Clone, PartialEq, prost::Message)]
struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    plugin_data: Option<PluginData>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PluginData {
    #[prost(string, tag = "1")]
    plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    content: Vec<u8>,
}

/// `tensorboard.hparams.HParamsPluginData` with its session-start info.
#[derive(Clone, PartialEq, prost::Message)]
struct HParamsPluginData {
    #[prost(int32, tag = "1")]
    version: i32,
    #[prost(message, optional, tag = "3")]
    session_start_info: Option<SessionStartInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SessionStartInfo {
    #[prost(btree_map = "string, message", tag = "1")]
    hparams: BTreeMap<String, ProtoValue>,
    #[prost(string, tag = "4")]
    group_name: String,
    #[prost(double, tag = "5")]
    start_time_secs: f64,
}

/// `google.protobuf.Value`, the kinds used.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoValue {
    #[prost(oneof = "Kind", tags = "2, 3, 4")]
    kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(double, tag = "2")]
    Number(f64),
    #[prost(string, tag = "3")]
    Text(String),
    #[prost(bool, tag = "4")]
    Bool(bool),
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecords use it.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The CRC as TFRecords store it: rotated right by 15 bits plus a constant.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// `data` framed as one TFRecord, appended to `out`.
pub fn push_record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

fn scalar(tag: &str, value: f64) -> SummaryValue {
    SummaryValue {
        tag: tag.to_owned(),
        metadata: None,
        // TensorBoard's scalars are 32-bit.
        value: Some(Scalar::SimpleValue(value as f32)),
    }
}

/// The target's hyperparameters as an HParams session-start summary.
fn hparams(params: &[(String, String)], target: &Target<'_>, t0: f64) -> SummaryValue {
    let numeric = ["seed", "defense_epsilon"];
    let hparams = params
        .iter()
        .filter(|(k, _)| !k.starts_with("spec.") || k.starts_with("spec.training."))
        .map(|(k, v)| {
            let kind = match (v.parse::<f64>(), v.parse::<bool>()) {
                (Ok(n), _) if numeric.contains(&k.as_str()) || k.starts_with("spec.training.") => {
                    Kind::Number(n)
                }
                (_, Ok(b)) => Kind::Bool(b),
                _ => Kind::Text(v.clone()),
            };
            (k.clone(), ProtoValue { kind: Some(kind) })
        })
        .collect();
    let data = HParamsPluginData {
        version: 0,
        session_start_info: Some(SessionStartInfo {
            hparams,
            group_name: target.name.clone(),
            start_time_secs: t0,
        }),
    };
    SummaryValue {
        tag: "_hparams_/session_start_info".into(),
        metadata: Some(SummaryMetadata {
            plugin_data: Some(PluginData {
                plugin_name: "hparams".into(),
                content: data.encode_to_vec(),
            }),
        }),
        value: None,
    }
}

/// One target's event file: the file version, its hyperparameters, then its scalars, one
/// event per (step, time) in the order of `points`.
fn event_file(points: &[Point], hparams: Option<SummaryValue>, t0: f64) -> Vec<u8> {
    let mut out = Vec::new();
    let event = |wall_time: f64, step: i64, what: What| {
        Event {
            wall_time,
            step,
            what: Some(what),
        }
        .encode_to_vec()
    };
    push_record(
        &mut out,
        &event(t0, 0, What::FileVersion(FILE_VERSION.into())),
    );
    if let Some(h) = hparams {
        push_record(
            &mut out,
            &event(t0, 0, What::Summary(Summary { value: vec![h] })),
        );
    }
    let mut i = 0;
    while i < points.len() {
        let (step, wall_time) = (points[i].step, points[i].wall_time);
        let mut values = Vec::new();
        while i < points.len() && points[i].step == step && points[i].wall_time == wall_time {
            values.push(scalar(&points[i].tag, points[i].value));
            i += 1;
        }
        push_record(
            &mut out,
            &event(wall_time, step, What::Summary(Summary { value: values })),
        );
    }
    out
}

/// This machine's name for the file name (TensorFlow's writers use the host name too).
fn host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into());
    advsweep_report::plots::slug(&name)
}

pub fn export(args: TrackerArgs) -> anyhow::Result<ExitCode> {
    let report = trackers::load(&args)?;
    let steps = EpsilonSteps::for_report(&report);
    let targets = trackers::targets(&report);
    let t0 = trackers::now();
    let files: Vec<(&Target<'_>, Vec<Point>)> = targets
        .iter()
        .map(|t| (t, trackers::points(t, steps, t0)))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    if files.is_empty() {
        return Err(trackers::nothing_yet(&report).into());
    }
    trackers::create_out(&args.out)?;
    let file_name = format!("events.out.tfevents.{}.{}{SUFFIX}", t0 as u64, host());
    for (target, points) in &files {
        let dir = args.out.join(&target.name);
        trackers::create_out(&dir)?;
        remove_earlier(&dir)?;
        let params = trackers::params(&report, target);
        let bytes = event_file(points, Some(hparams(&params, target, t0)), t0);
        let tmp = dir.join(".advsweep-events.tmp");
        std::fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        let path = dir.join(&file_name);
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        outln!("{} ({} scalars)", path.display(), points.len());
    }
    if steps.scale != 1.0 {
        outln!(
            "cells' steps are ε × 255 × {} (ε's exact value is each attack's `epsilon` scalar)",
            steps.scale
        );
    }
    outln!(
        "wrote {} run directories into {} (tensorboard --logdir {})",
        files.len(),
        args.out.display(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Removes the event files an earlier export of ours left in `dir`.
fn remove_earlier(dir: &Path) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("events.out.tfevents.") && name.ends_with(SUFFIX) {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot replace {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_values() {
        // The CRC catalogue's check value, then RFC 3720's (iSCSI) test vectors.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        let descending: Vec<u8> = (0..32).rev().collect();
        assert_eq!(crc32c(&descending), 0x113F_DB5C);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn masking_rotates_and_adds_the_constant() {
        // Values from tensorboard's own (Python) masked_crc32c.
        assert_eq!(masked_crc32c(b""), 0xA282_EAD8);
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
        assert_eq!(masked_crc32c(b"abc"), 0x21F1_576E);
        assert_eq!(masked_crc32c(&3u64.to_le_bytes()), 0x0E49_99B0);
    }

    /// Reads TFRecords back, checking both CRCs of each.
    fn records(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len_bytes: [u8; 8] = bytes[..8].try_into().unwrap();
            let crc = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
            assert_eq!(crc, masked_crc32c(&len_bytes));
            let len = u64::from_le_bytes(len_bytes) as usize;
            let data = &bytes[12..12 + len];
            let crc = u32::from_le_bytes(bytes[12 + len..16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc32c(data));
            out.push(data.to_vec());
            bytes = &bytes[16 + len..];
        }
        out
    }

    #[test]
    fn a_record_is_length_crc_data_crc() {
        let mut out = Vec::new();
        push_record(&mut out, b"abc");
        assert_eq!(out.len(), 8 + 4 + 3 + 4);
        assert_eq!(&out[..8], &3u64.to_le_bytes());
        assert_eq!(
            &out[8..12],
            &masked_crc32c(&3u64.to_le_bytes()).to_le_bytes()
        );
        assert_eq!(&out[12..15], b"abc");
        assert_eq!(&out[15..], &masked_crc32c(b"abc").to_le_bytes());
        push_record(&mut out, b"");
        assert_eq!(records(&out), vec![b"abc".to_vec(), Vec::new()]);
    }

    #[test]
    fn the_file_starts_with_its_version_and_groups_scalars_by_step() {
        let p = |tag: &str, step: i64, value: f64| Point {
            tag: tag.into(),
            step,
            value,
            wall_time: 100.0 + step as f64,
        };
        let points = [
            p("train/loss", 1, 2.5),
            p("test/accuracy", 1, 0.0),
            p("train/loss", 2, 1.5),
        ];
        let bytes = event_file(&points, None, 100.0);
        let events: Vec<Event> = records(&bytes)
            .iter()
            .map(|r| Event::decode(r.as_slice()).unwrap())
            .collect();
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[0].what,
            Some(What::FileVersion("brain.Event:2".into()))
        );
        // The file-version event's bytes: wall_time (field 1, double), file_version (field 3).
        let mut expected = vec![0x09];
        expected.extend_from_slice(&100.0f64.to_le_bytes());
        expected.extend_from_slice(&[0x1A, 13]);
        expected.extend_from_slice(b"brain.Event:2");
        assert_eq!(records(&bytes)[0], expected);
        let Some(What::Summary(first)) = &events[1].what else {
            panic!("a summary: {:?}", events[1]);
        };
        assert_eq!(events[1].step, 1);
        assert_eq!(events[1].wall_time, 101.0);
        assert_eq!(first.value.len(), 2);
        assert_eq!(first.value[0].tag, "train/loss");
        assert_eq!(first.value[0].value, Some(Scalar::SimpleValue(2.5)));
        // A zero is written, not left out as a proto3 default.
        assert_eq!(first.value[1].value, Some(Scalar::SimpleValue(0.0)));
        assert!(
            records(&bytes)[1]
                .windows(5)
                .any(|w| w == [0x15, 0, 0, 0, 0])
        );
        assert_eq!(events[2].step, 2);
    }
}
