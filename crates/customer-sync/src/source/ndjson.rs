//! NDJSON (JSON Lines): one JSON object per line.

use std::io::{BufRead, Read};
use std::sync::Arc;

use super::error::SourceError;
use super::json_object::{KeyCache, UnparsedObject};
use super::{Input, MAX_RECORD_BYTES, Step};
use crate::{Location, RecordError, RecordErrorKind};

pub(super) struct NdjsonReader {
    name: Arc<str>,
    input: Input,
    /// The current line (reused).
    line_buf: Vec<u8>,
    /// The number of lines read so far: the current line's number.
    line: u64,
    pub(super) keys: KeyCache,
}

impl NdjsonReader {
    /// Reads nothing yet: stdin must not block before the first `next`.
    pub(super) fn new(name: Arc<str>, input: Input) -> Self {
        Self {
            name,
            input,
            line_buf: Vec::new(),
            line: 0,
            keys: KeyCache::default(),
        }
    }

    pub(super) fn next_step(&mut self) -> Step {
        loop {
            match self.next_line(|mut line| line.parse()) {
                Line::Read(Ok(record)) => return Step::Record(record),
                Line::Read(Err(error)) | Line::Bad(error) => return Step::Bad(error),
                Line::Blank => {}
                Line::End => return Step::End,
                Line::Fatal(error) => return Step::Fatal(error),
            }
        }
    }

    /// Hands the next line to `visit`, which may parse it as the run does
    /// ([`UnparsedObject::parse`]) or only look at its bytes.
    pub(super) fn next_line<R>(&mut self, visit: impl FnOnce(UnparsedObject<'_>) -> R) -> Line<R> {
        match self.next_in_buffer(visit) {
            Ok(Ok(line)) => line,
            Ok(Err(visit)) => self.next_copied(visit),
            Err(err) => Line::Fatal(SourceError::read(&self.name, self.line + 1, err)),
        }
    }

    /// The common case without a copy: the next line lies whole in the read
    /// buffer, so it is visited there. `Ok(Err(visit))` when it does not (it
    /// spans the buffer's end, or the buffer is empty); then
    /// [`next_copied`] reads it.
    ///
    /// [`next_copied`]: Self::next_copied
    #[allow(clippy::type_complexity)]
    fn next_in_buffer<R, V: FnOnce(UnparsedObject<'_>) -> R>(
        &mut self,
        visit: V,
    ) -> std::io::Result<Result<Line<R>, V>> {
        let buffer = loop {
            match self.input.fill_buf() {
                Ok(buffer) => break buffer,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        };
        let Some(end) = memchr::memchr(b'\n', buffer) else {
            return Ok(Err(visit));
        };
        let line = &buffer[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > MAX_RECORD_BYTES {
            // Not reachable with a 64 KiB buffer; the copying path reports it.
            return Ok(Err(visit));
        }
        self.line += 1;
        let read = visit_line(&self.name, self.line, line, &mut self.keys, visit);
        self.input.consume(end + 1);
        Ok(Ok(read))
    }

    /// Reads the next line into `line_buf`, bounded, and visits it there.
    fn next_copied<R>(&mut self, visit: impl FnOnce(UnparsedObject<'_>) -> R) -> Line<R> {
        self.line_buf.clear();
        // Room for the limit plus `\r\n` and no more, so a huge line is
        // never held; `read_until` retries on `Interrupted` itself.
        let limit = MAX_RECORD_BYTES as u64 + 2;
        let read = (&mut self.input)
            .take(limit)
            .read_until(b'\n', &mut self.line_buf);
        match read {
            Ok(0) => return Line::End,
            Ok(_) => self.line += 1,
            Err(err) => return Line::Fatal(SourceError::read(&self.name, self.line + 1, err)),
        }
        let mut line = self.line_buf.as_slice();
        let complete = line.ends_with(b"\n");
        if complete {
            line = line.strip_suffix(b"\n").unwrap_or(line);
            line = line.strip_suffix(b"\r").unwrap_or(line);
        }
        if line.len() > MAX_RECORD_BYTES {
            // Skip the rest of the line unbuffered, so that the next line
            // is read from its start.
            if !complete && let Err(err) = self.input.skip_until(b'\n') {
                return Line::Fatal(SourceError::read(&self.name, self.line, err));
            }
            let message = format!("line is longer than {MAX_RECORD_BYTES} bytes");
            let location = Location {
                source: Arc::clone(&self.name),
                line: self.line,
                column: None,
                key: None,
            };
            return Line::Bad(RecordError::new(
                location,
                RecordErrorKind::Malformed,
                message,
            ));
        }
        visit_line(&self.name, self.line, line, &mut self.keys, visit)
    }
}

/// What reading one line gave.
pub(super) enum Line<R> {
    /// A line that is not blank, as its visitor saw it.
    Read(R),
    /// A blank line, skipped.
    Blank,
    /// A line too long to read.
    Bad(RecordError),
    End,
    Fatal(SourceError),
}

/// Visits line number `number` (its bytes without the line ending), unless
/// it is blank.
fn visit_line<R>(
    name: &Arc<str>,
    number: u64,
    mut bytes: &[u8],
    keys: &mut KeyCache,
    visit: impl FnOnce(UnparsedObject<'_>) -> R,
) -> Line<R> {
    if number == 1 {
        bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Line::Blank;
    }
    Line::Read(visit(UnparsedObject {
        line: number,
        bytes,
        column: None,
        name,
        keys,
    }))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use serde_json::json;

    use crate::source::{MAX_RECORD_BYTES, Source, SourceFormat, read_json_items};

    type Item = Result<(u64, serde_json::Value), (u64, String)>;

    fn read_all(data: impl AsRef<[u8]>) -> Vec<Item> {
        let (items, fatal) = read_json_items("t.ndjson", SourceFormat::Ndjson, data.as_ref());
        assert!(fatal.is_none());
        items
    }

    #[test]
    fn reads_objects_skipping_blank_lines() {
        let data = "\u{feff}{\"id\": 1}\n\n   \r\n{\"id\": 2, \"tags\": [\"a\"]}\r\n{\"id\":3}";
        assert_eq!(
            read_all(data),
            [
                Ok((1, json!({"id": 1}))),
                Ok((4, json!({"id": 2, "tags": ["a"]}))),
                Ok((5, json!({"id": 3}))),
            ]
        );
    }

    #[test]
    fn keeps_key_order() {
        let mut source = Source::from_reader(
            "t",
            SourceFormat::Ndjson,
            Cursor::new("{\"z\":1,\"a\":2,\"m\":3}\n"),
        )
        .unwrap();
        let record = source.next().unwrap().unwrap();
        let names: Vec<&str> = record.fields.iter().map(|f| &*f.name).collect();
        assert_eq!(names, ["z", "a", "m"]);
    }

    #[test]
    fn bad_lines_are_malformed_and_reading_goes_on() {
        let data = "{\"id\": 1}\n{\"id\": }\n[1, 2]\n\"text\"\n{\"a\":1} x\n{\"id\": 6}\n";
        let items = read_all(data);
        assert_eq!(items.len(), 6);
        assert_eq!(
            items[1],
            Err((2, "invalid JSON at column 8: expected value".into()))
        );
        assert!(
            matches!(&items[2], Err((3, m)) if m.contains("expected a JSON object")),
            "{:?}",
            items[2]
        );
        assert!(matches!(&items[3], Err((4, m)) if m.contains("expected a JSON object")));
        assert!(matches!(&items[4], Err((5, m)) if m.contains("trailing characters")));
        assert_eq!(items[5], Ok((6, json!({"id": 6}))));
    }

    #[test]
    fn long_lines_are_skipped_without_losing_the_next_line() {
        let long = format!("{{\"a\": \"{}\"}}", "x".repeat(MAX_RECORD_BYTES));
        let data = format!("{long}\n{{\"id\": 2}}\n{long}");
        let items = read_all(data);
        assert_eq!(items.len(), 3);
        assert!(matches!(&items[0], Err((1, m)) if m.contains("longer than")));
        assert_eq!(items[1], Ok((2, json!({"id": 2}))));
        assert!(matches!(&items[2], Err((3, _))));
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_accepted() {
        let prefix = "{\"a\": \"";
        let suffix = "\"}";
        let filler = "x".repeat(MAX_RECORD_BYTES - prefix.len() - suffix.len());
        let line = format!("{prefix}{filler}{suffix}");
        assert_eq!(line.len(), MAX_RECORD_BYTES);
        for data in [format!("{line}\n"), line.clone(), format!("{line}\r\n")] {
            let items = read_all(&data);
            assert!(matches!(&items[..], [Ok((1, _))]), "{}", data.len());
        }
        for data in [
            format!("{line} \n{{}}"),
            format!("{line} \r\n{{}}"),
            format!("{line} "),
        ] {
            let items = read_all(&data);
            assert!(
                matches!(&items[0], Err((1, m)) if m.contains("longer than")),
                "{}",
                data.len()
            );
            assert_eq!(items.len(), if data.ends_with('}') { 2 } else { 1 });
        }
    }
}
