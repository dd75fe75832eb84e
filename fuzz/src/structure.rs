//! Mutations that know an input's format, so they reach past its first check: the size and
//! offset fields of zip, safetensors, protobuf (ONNX), PNG, JPEG and burnpack, and the numbers
//! and lines of text formats (TOML, HTTP). Each sets a field to a value that breaks arithmetic
//! (zero, huge, past the end) and fixes what would otherwise reject it early (a PNG chunk's CRC,
//! safetensors' header length).

use rand::Rng;
use rand::rngs::StdRng;

/// Integers that break size arithmetic: zero, one, sign bits, and lengths past any buffer.
pub const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    i64::MAX as u64,
    u64::MAX,
];

/// An input format the fuzzer knows the fields of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    /// No structure: byte-level mutations only.
    Bytes,
    /// A zip archive (PyTorch's `torch.save`).
    Zip,
    /// safetensors: length, JSON header, data.
    Safetensors,
    /// Protobuf messages (ONNX).
    Protobuf,
    /// PNG chunks.
    Png,
    /// JPEG segments.
    Jpeg,
    /// Burn's burnpack: magic, version, CBOR metadata length and metadata.
    Burnpack,
    /// Lines and numbers of a text format (TOML, HTTP requests).
    Text,
}

/// Sizes that break a shape or offset: empty, one, large, and past memory.
const HUGE: [u64; 6] = [0, 1, 65_535, 1 << 31, 1 << 40, u64::MAX >> 1];

impl Structure {
    /// One field-level mutation of `data`, or `None` when none applies to it.
    pub fn mutate(self, data: &[u8], rng: &mut StdRng) -> Option<Vec<u8>> {
        match self {
            Self::Bytes => None,
            Self::Zip => zip(data, rng),
            Self::Safetensors => safetensors(data, rng),
            Self::Protobuf => protobuf(data, rng),
            Self::Png => png(data, rng),
            Self::Jpeg => jpeg(data, rng),
            Self::Burnpack => burnpack(data, rng),
            Self::Text => text(data, rng),
        }
    }
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// Every offset where `needle` starts.
fn find_all(data: &[u8], needle: &[u8]) -> Vec<usize> {
    data.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

fn put_le(data: &mut [u8], at: usize, width: usize, value: u64) {
    if at + width <= data.len() {
        data[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
    }
}

/// Sizes, name lengths, entry counts and offsets of local headers, the central directory and
/// its end record.
fn zip(data: &[u8], rng: &mut StdRng) -> Option<Vec<u8>> {
    /// A record's signature and its fields' (offset, width).
    type Record = (&'static [u8], &'static [(usize, usize)]);
    const FIELDS: [Record; 3] = [
        (
            b"PK\x03\x04",
            &[(14, 4), (18, 4), (22, 4), (26, 2), (28, 2), (8, 2)],
        ),
        (
            b"PK\x01\x02",
            &[
                (16, 4),
                (20, 4),
                (24, 4),
                (28, 2),
                (30, 2),
                (42, 4),
                (10, 2),
            ],
        ),
        (b"PK\x05\x06", &[(8, 2), (10, 2), (12, 4), (16, 4), (20, 2)]),
    ];
    let (sig, fields) = pick(rng, &FIELDS);
    let found = find_all(data, sig);
    let at = *found.get(rng.random_range(0..found.len().max(1)))?;
    let (offset, width) = pick(rng, fields);
    let mut out = data.to_vec();
    put_le(&mut out, at + offset, width, pick(rng, &INTERESTING));
    Some(out)
}

/// A tensor's shape, dtype or data offsets in the JSON header, written back with a matching
/// length prefix (sometimes a wrong one).
fn safetensors(data: &[u8], rng: &mut StdRng) -> Option<Vec<u8>> {
    let len = u64::from_le_bytes(data.get(..8)?.try_into().ok()?) as usize;
    let header = data.get(8..8usize.checked_add(len)?)?;
    let mut json: serde_json::Value = serde_json::from_slice(header).ok()?;
    let map = json.as_object_mut()?;
    let keys: Vec<String> = map
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let key = keys.get(rng.random_range(0..keys.len().max(1)))?.clone();
    let entry = map.get_mut(&key)?.as_object_mut()?;
    match rng.random_range(0..5) {
        0 | 1 => {
            let shape = entry.get_mut("shape")?.as_array_mut()?;
            let huge = pick(rng, &HUGE);
            if shape.is_empty() || rng.random_bool(0.2) {
                shape.push(huge.into());
            } else {
                let i = rng.random_range(0..shape.len());
                shape[i] = huge.into();
            }
        }
        2 => {
            let offsets = entry.get_mut("data_offsets")?.as_array_mut()?;
            let i = rng.random_range(0..offsets.len().max(1));
            *offsets.get_mut(i)? = pick(rng, &HUGE).into();
        }
        3 => {
            let dtype = pick(
                rng,
                &["F64", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "X"],
            );
            entry.insert("dtype".into(), dtype.into());
        }
        _ => {
            map.remove(&key);
        }
    }
    let header = serde_json::to_vec(&json).ok()?;
    let prefix = if rng.random_bool(0.9) {
        header.len() as u64
    } else {
        pick(rng, &INTERESTING)
    };
    let mut out = prefix.to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(data.get(8 + len..)?);
    Some(out)
}

/// A varint field (a dimension, a data type, a length) of any message nested in `data`, set to
/// a value that breaks it, re-encoded in place.
fn protobuf(data: &[u8], rng: &mut StdRng) -> Option<Vec<u8>> {
    let mut fields = Vec::new();
    walk_protobuf(data, 0, 0, &mut fields);
    let &(start, end) = fields.get(rng.random_range(0..fields.len().max(1)))?;
    let value = pick(rng, &HUGE);
    let mut out = data[..start].to_vec();
    write_varint(&mut out, value);
    out.extend_from_slice(&data[end..]);
    Some(out)
}

/// Collects the byte ranges of varint values in `data` (offset `base`), descending into
/// length-delimited fields that parse as messages.
fn walk_protobuf(data: &[u8], base: usize, depth: usize, out: &mut Vec<(usize, usize)>) -> bool {
    let mut at = 0;
    while at < data.len() {
        let Some((key, n)) = read_varint(&data[at..]) else {
            return false;
        };
        at += n;
        match key & 7 {
            0 => {
                let Some((_, n)) = read_varint(&data[at..]) else {
                    return false;
                };
                out.push((base + at, base + at + n));
                at += n;
            }
            1 => at += 8,
            5 => at += 4,
            2 => {
                let Some((len, n)) = read_varint(&data[at..]) else {
                    return false;
                };
                let len_range = (base + at, base + at + n);
                at += n;
                let Some(body) = usize::try_from(len).ok().and_then(|l| data.get(at..at + l))
                else {
                    return false;
                };
                out.push(len_range);
                if depth < 8 {
                    let before = out.len();
                    if !walk_protobuf(body, base + at, depth + 1, out) {
                        out.truncate(before);
                    }
                }
                at += body.len();
            }
            _ => return false,
        }
    }
    at == data.len()
}

fn read_varint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in data.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// IHDR's width, height, bit depth or colour type, or any chunk's length; the CRC is fixed up
/// so the decoder reaches the field.
fn png(data: &[u8], rng: &mut StdRng) -> Option<Vec<u8>> {
    let mut out = data.to_vec();
    let ihdr = *find_all(data, b"IHDR").first()?;
    match rng.random_range(0..4) {
        0 | 1 => {
            let at = ihdr + 4 + 4 * rng.random_range(0..2);
            let v = pick(rng, &[0u32, 1, 65_535, 100_000, 1 << 24, u32::MAX]);
            out.get_mut(at..at + 4)?.copy_from_slice(&v.to_be_bytes());
        }
        2 => {
            let at = ihdr + 4 + 8 + rng.random_range(0..2);
            *out.get_mut(at)? = pick(rng, &[0u8, 1, 2, 3, 4, 6, 8, 16, 255]);
        }
        _ => {
            // Any chunk's length: chunks start after the 8-byte signature.
            let chunks = find_all(data, b"IDAT");
            let at = chunks
                .get(rng.random_range(0..chunks.len().max(1)))?
                .checked_sub(4)?;
            let v = pick(rng, &[0u32, 1, 0x7fff_ffff, u32::MAX]);
            out.get_mut(at..at + 4)?.copy_from_slice(&v.to_be_bytes());
            return Some(out);
        }
    }
    let crc = crc32fast::hash(out.get(ihdr..ihdr + 4 + 13)?);
    out.get_mut(ihdr + 17..ihdr + 21)?
        .copy_from_slice(&crc.to_be_bytes());
    Some(out)
}

/// A frame header's (SOF0/SOF2) height, width or component count, or a segment length.
fn jpeg(data: &[u8], rng: &mut StdRng) -> Option<Vec<u8>> {
    let mut out = data.to_vec();
    let mut sofs = find_all(data, &[0xff, 0xc0]);
    sofs.extend(find_all(data, &[0xff, 0xc2]));
    let at = *sofs.get(rng.random_range(0..sofs.len().max(1)))?;
    let (offset, width) = pick(rng, &[(2usize, 2usize), (5, 2), (7, 2), (9, 1)]);
    let v = pick(rng, &[0u16, 1, 255, 0x7fff, u16::MAX]);
    let bytes = v.to_be_bytes();
    out.get_mut(at + offset..at + offset + width)?
        .copy_from_slice(&bytes[2 - width..]);
    Some(out)
}

/// The metadata length field, or a number inside the metadata rewritten at the same width
/// (CBOR strings carry their length, so the JSON inside keeps its framing).
fn burnpack(data: &[u8], rng: &mut StdRng) -> Option<Vec<u8>> {
    if rng.random_bool(0.3) {
        let mut out = data.to_vec();
        put_le(&mut out, 6, 4, pick(rng, &INTERESTING));
        return Some(out);
    }
    // Numbers in the metadata only (tensor names, shapes, our model metadata): digits in the
    // tensor data are weights, changing them changes no behaviour, and scanning a ResNet's 47 MB
    // for them was a third of the target's time.
    let end = burnpack_metadata_end(data);
    let mut out = same_width_number(&data[..end], rng)?;
    out.extend_from_slice(&data[end..]);
    Some(out)
}

/// Where a burnpack's metadata ends: a 10-byte header (magic 4, version 2, metadata length 4,
/// little-endian; burn-pack's `HEADER_SIZE`), then the metadata. The whole input when the
/// length field is cut off or points past the end.
fn burnpack_metadata_end(data: &[u8]) -> usize {
    data.get(6..10)
        .map(|b| 10 + u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .filter(|&end| end <= data.len())
        .unwrap_or(data.len())
}

/// A run of ASCII digits replaced by as many 9s or 0s: a huge or zero value, framing intact.
fn same_width_number(data: &[u8], rng: &mut StdRng) -> Option<Vec<u8>> {
    let runs = digit_runs(data);
    let &(start, end) = runs.get(rng.random_range(0..runs.len().max(1)))?;
    let mut out = data.to_vec();
    let digit = pick(rng, b"90");
    out[start..end].fill(digit);
    Some(out)
}

fn digit_runs(data: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut at = 0;
    while at < data.len() {
        if data[at].is_ascii_digit() {
            let start = at;
            while at < data.len() && data[at].is_ascii_digit() {
                at += 1;
            }
            runs.push((start, at));
        } else {
            at += 1;
        }
    }
    runs
}

/// A number replaced by one that breaks arithmetic, or a line duplicated, dropped or moved.
fn text(data: &[u8], rng: &mut StdRng) -> Option<Vec<u8>> {
    match rng.random_range(0..4) {
        0 | 1 => {
            let runs = digit_runs(data);
            let &(start, end) = runs.get(rng.random_range(0..runs.len().max(1)))?;
            let value = pick(
                rng,
                &[
                    "0",
                    "-1",
                    "nan",
                    "inf",
                    "1e308",
                    "4294967296",
                    "18446744073709551616",
                    "99999999999999999999",
                    "0.0000001",
                ],
            );
            let mut out = data[..start].to_vec();
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(&data[end..]);
            Some(out)
        }
        2 => same_width_number(data, rng),
        _ => {
            let mut lines: Vec<&[u8]> = data.split_inclusive(|&b| b == b'\n').collect();
            if lines.is_empty() {
                return None;
            }
            let i = rng.random_range(0..lines.len());
            match rng.random_range(0..3) {
                0 => lines.insert(i, lines[i]),
                1 => {
                    lines.remove(i);
                }
                _ => {
                    let j = rng.random_range(0..lines.len());
                    lines.swap(i, j);
                }
            }
            Some(lines.concat())
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn protobuf_varints_are_found_in_nested_messages() {
        // Field 1 (varint 150), field 2 (a message holding field 1 = 3).
        let data = [0x08, 0x96, 0x01, 0x12, 0x02, 0x08, 0x03];
        let mut fields = Vec::new();
        assert!(walk_protobuf(&data, 0, 0, &mut fields));
        assert_eq!(fields, vec![(1, 3), (4, 5), (6, 7)]);
    }

    #[test]
    fn safetensors_mutations_keep_the_header_length_right_most_of_the_time() {
        let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let mut data = (header.len() as u64).to_le_bytes().to_vec();
        data.extend_from_slice(header);
        data.extend_from_slice(&[0; 8]);
        let mut rng = StdRng::seed_from_u64(3);
        let mut parsed = 0;
        for _ in 0..100 {
            let out = safetensors(&data, &mut rng).expect("a header to mutate");
            let len = u64::from_le_bytes(out[..8].try_into().unwrap()) as usize;
            // A deliberately wrong prefix may be u64::MAX: no wrapping here either.
            let header = 8usize.checked_add(len).and_then(|end| out.get(8..end));
            if header.is_some_and(|h| serde_json::from_slice::<serde_json::Value>(h).is_ok()) {
                parsed += 1;
            }
            assert_ne!(out, data);
        }
        assert!(parsed > 80, "{parsed}");
    }

    #[test]
    fn burnpack_numbers_change_in_the_metadata_and_never_in_the_data() {
        let metadata = b"layer1.0.conv1.weight 64";
        let mut file = b"NRUB\x01\x00".to_vec();
        file.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
        file.extend_from_slice(metadata);
        let data = b"0123456789".repeat(100);
        file.extend_from_slice(&data);
        let mut rng = StdRng::seed_from_u64(7);
        let mut changed = 0;
        for _ in 0..200 {
            let Some(out) = Structure::Burnpack.mutate(&file, &mut rng) else {
                continue;
            };
            assert_eq!(out.len(), file.len());
            assert_eq!(
                &out[10 + metadata.len()..],
                &data[..],
                "the data is untouched"
            );
            changed += usize::from(out[10..10 + metadata.len()] != metadata[..]);
        }
        assert!(changed > 50, "{changed} of 200 changed the metadata");
        assert_eq!(burnpack_metadata_end(&file[..8]), 8, "a cut-off header");
    }

    #[test]
    fn png_dimension_changes_carry_a_valid_crc() {
        let mut bytes = Vec::new();
        image::DynamicImage::new_rgb8(3, 2)
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let out = png(&bytes, &mut rng).unwrap();
            let at = find_all(&out, b"IHDR")[0];
            let crc = crc32fast::hash(&out[at..at + 17]);
            let stored = u32::from_be_bytes(out[at + 17..at + 21].try_into().unwrap());
            // Length mutations leave IHDR alone; either way its CRC holds.
            assert_eq!(crc, stored);
        }
    }
}
