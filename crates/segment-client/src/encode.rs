//! Encodes a batch into a request body: the JSON envelope, then gzip.
//!
//! Events are already serialised, so encoding is concatenation plus
//! compression; it is redone per attempt only because `sentAt` changes.

use std::cell::RefCell;
use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use flate2::{Compress, Compression, Crc, FlushCompress, Status};

use crate::batcher::Batch;

const PREFIX: &[u8] = br#"{"batch":["#;
const SENT_AT: &[u8] = br#"],"sentAt":""#;
const CONTEXT: &[u8] = br#"","context":"#;
const SUFFIX: &[u8] = b"}";
/// `sentAt` is always `YYYY-MM-DDTHH:MM:SS.mmmZ`.
const SENT_AT_LEN: usize = 24;

/// A request body ready to send.
#[derive(Debug)]
pub(crate) struct Body {
    pub bytes: Vec<u8>,
    pub gzip: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Encoder {
    context: Vec<u8>,
    gzip: Option<Compression>,
}

impl Encoder {
    /// An encoder whose envelope carries `context.library`, compressing at
    /// `gzip_level` (0-9) or not at all.
    pub fn new(gzip_level: Option<u32>) -> Self {
        let context =
            serde_json::to_vec(&serde_json::json!({ "library": crate::message::library() }))
                .expect("a JSON literal serialises");
        Self {
            context,
            gzip: gzip_level.map(Compression::new),
        }
    }

    /// Bytes the envelope adds around the comma-separated events.
    pub fn envelope_bytes(&self) -> usize {
        PREFIX.len()
            + SENT_AT.len()
            + SENT_AT_LEN
            + CONTEXT.len()
            + self.context.len()
            + SUFFIX.len()
    }

    /// Encodes `batch` with `sentAt` set to `sent_at`.
    pub fn encode(&self, batch: &Batch, sent_at: DateTime<Utc>) -> std::io::Result<Body> {
        match self.gzip {
            Some(level) => SCRATCH.with_borrow_mut(|scratch| {
                scratch.json.clear();
                self.write_json(&mut scratch.json, batch, sent_at)?;
                Ok(Body {
                    bytes: scratch.gzip(level, batch.body_bytes)?,
                    gzip: true,
                })
            }),
            None => {
                let mut out = Vec::with_capacity(batch.body_bytes);
                self.write_json(&mut out, batch, sent_at)?;
                Ok(Body {
                    bytes: out,
                    gzip: false,
                })
            }
        }
    }

    fn write_json(
        &self,
        out: &mut impl Write,
        batch: &Batch,
        sent_at: DateTime<Utc>,
    ) -> std::io::Result<()> {
        out.write_all(PREFIX)?;
        for (i, event) in batch.events.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            out.write_all(&event.json)?;
        }
        out.write_all(SENT_AT)?;
        let sent_at = sent_at.to_rfc3339_opts(SecondsFormat::Millis, true);
        debug_assert_eq!(sent_at.len(), SENT_AT_LEN);
        out.write_all(sent_at.as_bytes())?;
        out.write_all(CONTEXT)?;
        out.write_all(&self.context)?;
        out.write_all(SUFFIX)
    }
}

/// Per-thread buffers reused across batches: a fresh deflate state per
/// request (hundreds of KB to allocate and clear) cost more than the
/// compression of a 100-event batch.
struct Scratch {
    json: Vec<u8>,
    deflate: Option<(Compression, Compress)>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { json: Vec::new(), deflate: None }) };
}

/// gzip header: magic, deflate, no flags, no mtime, no extra flags, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

impl Scratch {
    /// Gzips `self.json` (RFC 1952: header, raw deflate, CRC-32, size).
    fn gzip(&mut self, level: Compression, expected_len: usize) -> std::io::Result<Vec<u8>> {
        debug_assert_eq!(self.json.len(), expected_len);
        let deflate = match &mut self.deflate {
            Some((l, deflate)) if *l == level => {
                deflate.reset();
                deflate
            }
            slot => &mut slot.insert((level, Compress::new(level, false))).1,
        };
        let input = &self.json[..];
        let mut out = Vec::with_capacity(input.len() / 3 + 64);
        out.extend_from_slice(&GZIP_HEADER);
        loop {
            let consumed = usize::try_from(deflate.total_in()).unwrap_or(usize::MAX);
            let status = deflate
                .compress_vec(&input[consumed..], &mut out, FlushCompress::Finish)
                .map_err(std::io::Error::other)?;
            if status == Status::StreamEnd {
                break;
            }
            out.reserve(out.capacity().max(4096));
        }
        let mut crc = Crc::new();
        crc.update(input);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        // ISIZE is the input length modulo 2^32 by definition.
        out.extend_from_slice(&(input.len() as u32).to_le_bytes());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batcher::{Batcher, Limits};
    use crate::message::{IdentifyParams, Identity, prepare};
    use std::io::Read;

    fn batch(encoder: &Encoder, n: usize) -> Batch {
        let mut batcher = Batcher::new(Limits {
            max_events: 1000,
            max_request_bytes: 500_000,
            envelope_bytes: encoder.envelope_bytes(),
        });
        for i in 0..n {
            let event = prepare(IdentifyParams::new(Identity::user(format!("user-{i}")))).unwrap();
            assert!(batcher.push(i as u64, event).is_none());
        }
        batcher.take().unwrap()
    }

    #[test]
    fn plain_body_is_valid_json_of_exactly_the_accounted_size() {
        let encoder = Encoder::new(None);
        let batch = batch(&encoder, 3);
        let body = encoder.encode(&batch, Utc::now()).unwrap();
        assert!(!body.gzip);
        assert_eq!(body.bytes.len(), batch.body_bytes);
        let json: serde_json::Value = serde_json::from_slice(&body.bytes).unwrap();
        assert_eq!(json["batch"].as_array().unwrap().len(), 3);
        assert_eq!(json["batch"][2]["userId"], "user-2");
        assert_eq!(json["context"]["library"]["name"], crate::LIBRARY_NAME);
        assert_eq!(json["sentAt"].as_str().unwrap().len(), SENT_AT_LEN);
    }

    #[test]
    fn gzip_body_decompresses_to_the_plain_body() {
        let sent_at = Utc::now();
        let plain = Encoder::new(None);
        let gzip = Encoder::new(Some(6));
        let batch = batch(&plain, 50);
        let expected = plain.encode(&batch, sent_at).unwrap().bytes;
        let body = gzip.encode(&batch, sent_at).unwrap();
        assert!(body.gzip);
        assert!(
            body.bytes.len() < expected.len() / 3,
            "identify batches compress well"
        );
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(&body.bytes[..])
            .read_to_end(&mut inflated)
            .unwrap();
        assert_eq!(inflated, expected);
    }

    #[test]
    fn reused_compressor_produces_independent_bodies() {
        let plain = Encoder::new(None);
        let gzip = Encoder::new(Some(1));
        let sent_at = Utc::now();
        for n in [40, 1, 300] {
            let batch = batch(&plain, n);
            let body = gzip.encode(&batch, sent_at).unwrap();
            let mut inflated = Vec::new();
            flate2::read::GzDecoder::new(&body.bytes[..])
                .read_to_end(&mut inflated)
                .unwrap();
            assert_eq!(
                inflated,
                plain.encode(&batch, sent_at).unwrap().bytes,
                "batch of {n}"
            );
        }
    }
}
