//! TensorBoard event files: the run's scalars, for users who already live in TensorBoard.
//!
//! Written by hand: the one Rust crate for it (`tensorboard-rs`) has had no release since 2022
//! and pulls protobuf 2 and an old `image`. An event file is a TFRecord stream (length, masked
//! CRC-32C of the length, data, masked CRC-32C of the data) of `Event` protobufs; a scalar is an
//! `Event { wall_time, step, summary: Summary { value: [Value { tag, simple_value }] } }`, and
//! the first record carries `file_version = "brain.Event:2"`. Four protobuf field types cover it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// One event file open for appending scalars.
pub struct EventWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates a new event file in `dir` (created if missing), named as TensorBoard's own
    /// writers name theirs, so that a resumed run adds a file beside the first one's.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .unwrap_or_else(|| "localhost".into());
        let path = dir.join(format!(
            "events.out.tfevents.{:010}.{host}.{}.{}",
            now.as_secs(),
            std::process::id(),
            now.subsec_nanos()
        ));
        let mut writer = Self {
            file: BufWriter::new(File::create_new(&path)?),
            path,
        };
        let mut event = Vec::new();
        put_f64(&mut event, 1, wall_time());
        put_bytes(&mut event, 3, b"brain.Event:2");
        writer.record(&event)?;
        Ok(writer)
    }

    /// Marks a (re)start at `step`: TensorBoard's reader then drops the values an earlier
    /// attempt logged at this step and after (a resumed run redoes them).
    pub fn start(&mut self, step: u64) -> std::io::Result<()> {
        let mut session_log = Vec::new();
        // SessionLog.status = START (1).
        put_varint_field(&mut session_log, 1, 1);
        let mut event = Vec::new();
        put_f64(&mut event, 1, wall_time());
        put_varint_field(&mut event, 2, step);
        put_bytes(&mut event, 7, &session_log);
        self.record(&event)
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Scalars at one step: one event, one summary value per (tag, value).
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> std::io::Result<()> {
        let mut summary = Vec::new();
        for (tag, value) in values {
            let mut v = Vec::new();
            put_bytes(&mut v, 1, tag.as_bytes());
            // TensorBoard's scalar is a float32.
            v.push(0x15);
            v.extend_from_slice(&(*value as f32).to_le_bytes());
            put_bytes(&mut summary, 1, &v);
        }
        let mut event = Vec::new();
        put_f64(&mut event, 1, wall_time());
        put_varint_field(&mut event, 2, step);
        put_bytes(&mut event, 5, &summary);
        self.record(&event)
    }

    /// One TFRecord, flushed: a killed run's file ends at a whole record.
    fn record(&mut self, data: &[u8]) -> std::io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.file.write_all(&len)?;
        self.file.write_all(&masked_crc(&len).to_le_bytes())?;
        self.file.write_all(data)?;
        self.file.write_all(&masked_crc(data).to_le_bytes())?;
        self.file.flush()
    }
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// TFRecord's masked CRC-32C: a CRC of data holding CRCs is itself a poor checksum.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    c.rotate_right(15).wrapping_add(0xA282_EAD8)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(out, u64::from(field) << 3);
    put_varint(out, v);
}

fn put_f64(out: &mut Vec<u8>, field: u32, v: f64) {
    put_varint(out, (u64::from(field) << 3) | 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(field) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records of an event file, each checked against both CRCs.
    fn records(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = &bytes[at..at + 8];
            let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(crc, masked_crc(len), "length CRC of record {}", out.len());
            let n = u64::from_le_bytes(len.try_into().unwrap()) as usize;
            let data = &bytes[at + 12..at + 12 + n];
            let crc = u32::from_le_bytes(bytes[at + 12 + n..at + 16 + n].try_into().unwrap());
            assert_eq!(crc, masked_crc(data), "data CRC of record {}", out.len());
            out.push(data.to_vec());
            at += 16 + n;
        }
        out
    }

    /// (field, wire type, payload) of each field of a protobuf message.
    fn fields(mut m: &[u8]) -> Vec<(u64, u8, Vec<u8>)> {
        fn varint(m: &mut &[u8]) -> u64 {
            let (mut v, mut shift) = (0u64, 0);
            loop {
                let b = m[0];
                *m = &m[1..];
                v |= u64::from(b & 0x7f) << shift;
                shift += 7;
                if b < 0x80 {
                    return v;
                }
            }
        }
        let mut out = Vec::new();
        while !m.is_empty() {
            let key = varint(&mut m);
            let (field, wire) = (key >> 3, (key & 7) as u8);
            let payload = match wire {
                0 => varint(&mut m).to_le_bytes().to_vec(),
                1 => {
                    let (p, rest) = m.split_at(8);
                    m = rest;
                    p.to_vec()
                }
                2 => {
                    let n = varint(&mut m) as usize;
                    let (p, rest) = m.split_at(n);
                    m = rest;
                    p.to_vec()
                }
                5 => {
                    let (p, rest) = m.split_at(4);
                    m = rest;
                    p.to_vec()
                }
                w => panic!("wire type {w}"),
            };
            out.push((field, wire, payload));
        }
        out
    }

    #[test]
    fn the_crc_is_castagnolis_masked_as_tensorboard_masks_it() {
        // Expected values from TensorBoard's own `masked_crc32c` (tensorboard 2.21.0).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xC78A_B0E5);
        assert_eq!(masked_crc(&24u64.to_le_bytes()), 0x224B_7FA3);
    }

    #[test]
    fn scalars_read_back_with_their_steps_and_tags() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(0, &[("train/loss", 2.5), ("train/lr", 0.1)])
            .unwrap();
        w.scalars(300, &[("train/loss", 1.25)]).unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        assert!(
            w.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .contains("tfevents")
        );
        let recs = records(&bytes);
        assert_eq!(recs.len(), 3);
        assert!(w.path().starts_with(dir.path()));
        let first = fields(&recs[0]);
        assert_eq!(first[1], (3, 2, b"brain.Event:2".to_vec()));
        let mut seen = Vec::new();
        for rec in &recs[1..] {
            let f = fields(rec);
            assert_eq!((f[0].0, f[0].1), (1, 1), "wall_time first");
            let wall = f64::from_le_bytes(f[0].2.clone().try_into().unwrap());
            assert!(wall > 1.6e9);
            let step = u64::from_le_bytes(f[1].2.clone().try_into().unwrap());
            assert_eq!((f[1].0, f[2].0), (2, 5));
            for (_, _, value) in fields(&f[2].2) {
                let v = fields(&value);
                let tag = String::from_utf8(v[0].2.clone()).unwrap();
                let x = f32::from_le_bytes(v[1].2.clone().try_into().unwrap());
                assert_eq!((v[1].0, v[1].1), (2, 5), "simple_value is a fixed32");
                seen.push((step, tag, x));
            }
        }
        assert_eq!(
            seen,
            [
                (0, "train/loss".to_string(), 2.5),
                (0, "train/lr".to_string(), 0.1),
                (300, "train/loss".to_string(), 1.25)
            ]
        );
    }

    #[test]
    fn a_second_writer_in_the_same_folder_gets_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = EventWriter::create(dir.path()).unwrap();
        let b = EventWriter::create(dir.path()).unwrap();
        assert_ne!(a.path(), b.path());
    }
}
