//! Encodes a batch into a request body: the JSON envelope, then gzip.
//!
//! Events are already serialised, so encoding is concatenation plus
//! compression; it is redone per attempt only because `sentAt` changes.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;

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
            Some(level) => {
                let out = Vec::with_capacity(batch.body_bytes / 4 + 64);
                let mut gz = GzEncoder::new(out, level);
                self.write_json(&mut gz, batch, sent_at)?;
                Ok(Body {
                    bytes: gz.finish()?,
                    gzip: true,
                })
            }
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
}
