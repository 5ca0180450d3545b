//! A JSON array of objects, streamed one element at a time.
//!
//! A small scanner tracks strings, escapes and bracket depth just well enough
//! to cut out each top-level element's bytes at the commas between elements;
//! only then is the element parsed. So one element is in memory at a time,
//! and a malformed element does not lose the rest of the array: the scan
//! resumes at the next top-level comma.

use std::io::{self, BufRead};
use std::sync::Arc;

use super::error::SourceError;
use super::json_object::{KeyCache, UnparsedObject};
use super::{Input, MAX_RECORD_BYTES, Step};
use crate::{Location, RecordError, RecordErrorKind};

const ARRAY_HINT: &str = "a .json file must hold one JSON array of objects; for one object per line, use a .ndjson or .jsonl file or --format ndjson";
const TRUNCATED_HINT: &str = "the file may have been cut short; a complete array ends with `]`";

pub(super) struct JsonArrayReader {
    name: Arc<str>,
    input: Input,
    /// The current element's bytes (reused).
    element: Vec<u8>,
    pub(super) keys: KeyCache,
    scan: Scan,
    state: State,
    /// Whether a top-level comma was seen: then `]` must follow an element.
    after_comma: bool,
    /// Whether an element whole in the buffer is cut by [`scan_element`]
    /// rather than the byte loop; tests turn it off to check both cut alike.
    fast_elements: bool,
}

/// The scanner's state, copied into locals for the hot loop.
#[derive(Clone, Copy)]
struct Scan {
    in_string: bool,
    escaped: bool,
    /// Bracket depth inside the current element.
    depth: u32,
    /// The 1-based line at the scan position.
    line: u64,
    /// Byte offset of the scan position, and of the current line's start.
    offset: u64,
    line_start: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    InArray,
    AfterArray,
    Done,
}

/// What the scanner cut out of the input.
struct Cut {
    /// Line and 1-based byte column of the element's first byte, unless the
    /// element was empty (`[1,,2]`).
    start: Option<(u64, u64)>,
    /// The element was over [`MAX_RECORD_BYTES`] and its bytes were dropped.
    oversize: bool,
    /// The element was ended by the array's `]` rather than a comma.
    closing: bool,
}

impl JsonArrayReader {
    /// Reads up to and including the opening `[`.
    pub(super) fn new(name: Arc<str>, input: Input) -> Result<Self, SourceError> {
        let mut reader = Self {
            name,
            input,
            element: Vec::new(),
            keys: KeyCache::default(),
            scan: Scan {
                in_string: false,
                escaped: false,
                depth: 0,
                line: 1,
                offset: 0,
                line_start: 0,
            },
            state: State::InArray,
            after_comma: false,
            fast_elements: true,
        };
        reader.skip_bom()?;
        match reader.skip_whitespace()? {
            Some(b'[') => {
                reader.input.consume(1);
                reader.scan.offset += 1;
                Ok(reader)
            }
            found => {
                let found = match found {
                    None => "the file is empty".to_owned(),
                    Some(byte) if byte.is_ascii_graphic() => {
                        format!("found `{}`", char::from(byte))
                    }
                    Some(byte) => format!("found byte 0x{byte:02x}"),
                };
                let message = format!("expected a JSON array (`[`), but {found}");
                Err(SourceError::invalid(
                    &reader.name,
                    reader.scan.line,
                    message,
                    Some(ARRAY_HINT),
                ))
            }
        }
    }

    fn skip_bom(&mut self) -> Result<(), SourceError> {
        // A BOM split over two reads is not seen; it then fails as "not an
        // array", which names the byte.
        if fill_buf(&mut self.input, &self.name, self.scan.line)?.starts_with(b"\xef\xbb\xbf") {
            self.input.consume(3);
            self.scan.offset += 3;
            self.scan.line_start = 3;
        }
        Ok(())
    }

    /// Skips JSON whitespace and returns the next byte, not consumed.
    fn skip_whitespace(&mut self) -> Result<Option<u8>, SourceError> {
        loop {
            let buf = fill_buf(&mut self.input, &self.name, self.scan.line)?;
            if buf.is_empty() {
                return Ok(None);
            }
            let mut skipped = 0;
            let mut found = None;
            for &byte in buf {
                match byte {
                    b' ' | b'\t' | b'\r' => {}
                    b'\n' => {
                        self.scan.line += 1;
                        self.scan.line_start = self.scan.offset + skipped as u64 + 1;
                    }
                    _ => {
                        found = Some(byte);
                        break;
                    }
                }
                skipped += 1;
            }
            self.input.consume(skipped);
            self.scan.offset += skipped as u64;
            if found.is_some() {
                return Ok(found);
            }
        }
    }

    pub(super) fn next_step(&mut self) -> Step {
        match self.next_element(|mut element| element.parse()) {
            Ok(Ok(record)) => Step::Record(record),
            Ok(Err(error)) => Step::Bad(error),
            Err(step) => step,
        }
    }

    /// Hands the next element to `visit`, which may parse it as the run
    /// does ([`UnparsedObject::parse`]) or only look at its bytes; `Err`
    /// with the step to take when there is no element to visit.
    pub(super) fn next_element<R>(
        &mut self,
        visit: impl FnOnce(UnparsedObject<'_>) -> R,
    ) -> Result<R, Step> {
        loop {
            match self.state {
                State::Done => return Err(Step::End),
                State::AfterArray => {
                    self.state = State::Done;
                    return Err(match self.skip_whitespace() {
                        Ok(None) => Step::End,
                        Ok(Some(_)) => Step::Fatal(SourceError::invalid(
                            &self.name,
                            self.scan.line,
                            "unexpected data after the end of the JSON array",
                            Some(ARRAY_HINT),
                        )),
                        Err(err) => Step::Fatal(err),
                    });
                }
                State::InArray => {}
            }
            let cut = match self.cut_element() {
                Ok(cut) => cut,
                Err(err) => {
                    self.state = State::Done;
                    return Err(Step::Fatal(err));
                }
            };
            let after_comma = std::mem::replace(&mut self.after_comma, !cut.closing);
            if cut.closing {
                self.state = State::AfterArray;
            }
            let Some((line, column)) = cut.start else {
                if cut.closing && !after_comma {
                    // `[]`, or `]` right after the last element.
                    continue;
                }
                let message = if cut.closing {
                    "trailing comma before `]`"
                } else {
                    "empty array element (two commas in a row?)"
                };
                return Err(self.malformed(self.scan.line, message.to_owned()));
            };
            if cut.oversize {
                return Err(self.malformed(
                    line,
                    format!("array element is larger than {MAX_RECORD_BYTES} bytes"),
                ));
            }
            return Ok(visit(UnparsedObject {
                line,
                bytes: &self.element,
                column: Some(column),
                name: &self.name,
                keys: &mut self.keys,
            }));
        }
    }

    fn malformed(&self, line: u64, message: String) -> Step {
        let location = Location {
            source: Arc::clone(&self.name),
            line,
            column: None,
            key: None,
        };
        Step::Bad(RecordError::new(
            location,
            RecordErrorKind::Malformed,
            message,
        ))
    }

    /// Scans to the next top-level `,` or `]`, collecting the element's bytes
    /// into `self.element`.
    ///
    /// # Errors
    /// The input ends first (the array is not closed), or reading fails.
    fn cut_element(&mut self) -> Result<Cut, SourceError> {
        self.element.clear();
        let mut start = None;
        let mut oversize = false;
        loop {
            let mut scan = self.scan;
            let chunk = match self.input.fill_buf() {
                Ok(chunk) => chunk,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(SourceError::read(&self.name, scan.line, err)),
            };
            if chunk.is_empty() {
                let message = match start {
                    Some((line, _)) => {
                        format!("the file ends inside the array element that starts at line {line}")
                    }
                    None => "the file ends before the JSON array is closed".to_owned(),
                };
                let line = start.map_or(scan.line, |(line, _)| line);
                return Err(SourceError::invalid(
                    &self.name,
                    line,
                    message,
                    Some(TRUNCATED_HINT),
                ));
            }
            let mut copy_from = 0;
            let mut end = None;
            let mut next = 0;
            let fresh = start.is_none();
            if fresh {
                // The element starts at the first byte that is not
                // whitespace: found here, so the loop below need not ask.
                while let Some(&byte) = chunk.get(next) {
                    match byte {
                        b' ' | b'\t' | b'\r' => {}
                        b'\n' => {
                            scan.line += 1;
                            scan.line_start = scan.offset + next as u64 + 1;
                        }
                        // An empty element: the loop below ends it.
                        b',' | b']' => break,
                        _ => {
                            start =
                                Some((scan.line, scan.offset + next as u64 - scan.line_start + 1));
                            copy_from = next;
                            break;
                        }
                    }
                    next += 1;
                }
            }
            if fresh && start.is_some() && self.fast_elements {
                // The common element, whole in the buffer: the same walk as
                // the byte loop below, in a tighter loop.
                if let Some(cut) = scan_element(&chunk[next..]) {
                    if let Some(last) = cut.last_newline {
                        scan.line += cut.newlines;
                        scan.line_start = scan.offset + (next + last) as u64 + 1;
                    }
                    end = Some(next + cut.end);
                    next = chunk.len();
                }
            }
            while let Some(&byte) = chunk.get(next) {
                let i = next;
                next += 1;
                if byte == b'\n' {
                    // Counted inside strings too: a raw newline there is
                    // invalid JSON, but it is still a line of the file.
                    scan.line += 1;
                    scan.line_start = scan.offset + i as u64 + 1;
                }
                if scan.in_string {
                    if scan.escaped {
                        scan.escaped = false;
                    } else if byte == b'\\' {
                        scan.escaped = true;
                    } else if byte == b'"' {
                        scan.in_string = false;
                    } else {
                        // Most bytes are inside strings: jump over the plain
                        // ones to the next byte that matters there.
                        next += memchr::memchr3(b'"', b'\\', b'\n', &chunk[next..])
                            .unwrap_or(chunk.len() - next);
                    }
                    continue;
                }
                match byte {
                    b' ' | b'\t' | b'\r' | b'\n' => continue,
                    b',' | b']' if scan.depth == 0 => {
                        end = Some(i);
                        break;
                    }
                    b'"' => scan.in_string = true,
                    b'{' | b'[' => scan.depth += 1,
                    // Unbalanced closers are left for the parser to report.
                    b'}' | b']' => scan.depth = scan.depth.saturating_sub(1),
                    _ => {}
                }
            }
            let consumed = end.map_or(chunk.len(), |at| at + 1);
            if start.is_some() && !oversize {
                let piece = &chunk[copy_from..end.unwrap_or(chunk.len())];
                if self.element.len() + piece.len() > MAX_RECORD_BYTES {
                    // Keep scanning for the element's end, without its bytes.
                    oversize = true;
                    self.element.clear();
                } else {
                    self.element.extend_from_slice(piece);
                }
            }
            let closing = end.is_some_and(|at| chunk[at] == b']');
            scan.offset += consumed as u64;
            self.input.consume(consumed);
            self.scan = scan;
            if end.is_some() {
                // A new element starts outside any string, at depth 0; reset
                // in case this one was malformed.
                self.scan.depth = 0;
                return Ok(Cut {
                    start,
                    oversize,
                    closing,
                });
            }
        }
    }
}

/// What [`scan_element`] found: where the element ends, and its lines.
struct ElementScan {
    /// The index of the top-level `,` or `]` that ends it.
    end: usize,
    newlines: u64,
    /// The index of the last `\n` before `end`, if any.
    last_newline: Option<usize>,
}

/// The bytes that end a run of plain bytes inside a string.
const IN_STRING_SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[b'\n' as usize] = true;
    table
};

/// Walks an element from its first byte as [`JsonArrayReader::cut_element`]'s
/// byte loop does (strings and their escapes, bracket depth, newlines) to the
/// top-level `,` or `]` that ends it, but skips a string's plain bytes in a
/// loop of its own: most of an element is strings, and the byte loop paid a
/// `memchr` call per string. `None` if `bytes` ends first.
fn scan_element(bytes: &[u8]) -> Option<ElementScan> {
    let (mut depth, mut newlines, mut last_newline) = (0u32, 0u64, None);
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'"' => loop {
                i = next_string_special(bytes, i + 1);
                match *bytes.get(i)? {
                    b'"' => break,
                    b'\\' => {
                        // The escaped byte is skipped, but a newline is a line.
                        i += 1;
                        if *bytes.get(i)? == b'\n' {
                            newlines += 1;
                            last_newline = Some(i);
                        }
                    }
                    _ => {
                        newlines += 1;
                        last_newline = Some(i);
                    }
                }
            },
            b'\n' => {
                newlines += 1;
                last_newline = Some(i);
            }
            b'{' | b'[' => depth += 1,
            b',' | b']' if depth == 0 => {
                return Some(ElementScan {
                    end: i,
                    newlines,
                    last_newline,
                });
            }
            // Unbalanced closers are left for the parser to report.
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The index of the first `"`, `\` or newline in `bytes` from `at` on
/// (`bytes.len()` if none): eight bytes at a time, where a byte loop cost
/// four instructions a byte, 8% of a JSON array run (its strings are read
/// in both passes).
fn next_string_special(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let (quote, backslash, newline) = (
            word ^ (ONES * u64::from(b'"')),
            word ^ (ONES * u64::from(b'\\')),
            word ^ (ONES * u64::from(b'\n')),
        );
        // A zero byte in any of the three: the lowest flag is exact (a
        // borrow can only flag bytes above a real zero).
        let zero = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (newline.wrapping_sub(ONES) & !newline);
        let found = zero & HIGHS;
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while bytes
        .get(at)
        .is_some_and(|&b| !IN_STRING_SPECIAL[usize::from(b)])
    {
        at += 1;
    }
    at
}

/// `BufRead::fill_buf`, retrying on `Interrupted`.
fn fill_buf<'a>(input: &'a mut Input, name: &Arc<str>, line: u64) -> Result<&'a [u8], SourceError> {
    // Returning the borrow from inside the loop does not pass the borrow
    // checker, so the loop only fills the buffer; the second call returns it.
    loop {
        match input.fill_buf() {
            Ok(_) => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(SourceError::read(name, line, err)),
        }
    }
    input
        .fill_buf()
        .map_err(|err| SourceError::read(name, line, err))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use serde_json::json;

    use super::{IN_STRING_SPECIAL, next_string_special};
    use crate::source::{MAX_RECORD_BYTES, Source, SourceError, SourceFormat, read_json_items};

    type Item = Result<(u64, serde_json::Value), (u64, String)>;

    fn read_all(data: impl AsRef<[u8]>) -> (Vec<Item>, Option<SourceError>) {
        read_json_items("t.json", SourceFormat::JsonArray, data.as_ref())
    }

    fn read_ok(data: &str) -> Vec<Item> {
        let (items, fatal) = read_all(data);
        assert!(fatal.is_none(), "{fatal:?}");
        items
    }

    /// Pieces of an array for [`valid_elements_are_cut_as_the_byte_loop_cuts_them`].
    fn piece(kind: u8, n: usize) -> String {
        match kind % 15 {
            0 => format!(r#"{{"id": {n}, "name": "a\"b\\", "x": [1, {{"y": "]"}}]}}"#),
            1 => format!("{{\"id\": {n},\n \"s\": \"{}\"}}", "z".repeat(n % 900)),
            2 => format!("\n  {{\"id\": {n}}}  \n"),
            3 => format!("{n}"),
            4 => format!("\"str {n}\""),
            5 => "{\"bad\": }".into(),
            6 => "{\"unclosed\": \"a}".into(),
            7 => format!("{{\"id\": {n}}} {{\"id\": 2}}"),
            8 => String::new(),
            9 => "{\"raw\": \"line\nbreak\"}".into(),
            10 => "[1, [2, [3]]]".into(),
            11 => format!("{{\"id\": {n}, \"e\": \"\\u00e9\"}}\r\n"),
            12 => "nul".into(),
            13 => "{\"esc\": \"a\\\nb\\\\\", \"q\": \"\\\"\"}".into(),
            14 => format!(
                "{{\"deep\": {}1{}}}",
                "[".repeat(n % 140),
                "]".repeat(n % 140)
            ),
            _ => "{\"a\": [1, 2}, \"b\": \"}\"]".into(),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Arrays of valid and invalid elements, some across the read
        /// buffer's end, read alike whether elements are cut by
        /// `scan_element` or the byte loop: the same records, errors and lines.
        #[test]
        fn valid_elements_are_cut_as_the_byte_loop_cuts_them(
            kinds in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            closed: bool,
        ) {
            let pieces: Vec<String> = kinds.iter().enumerate().map(|(n, k)| piece(*k, n)).collect();
            let mut text = format!("[{}", pieces.join(","));
            if closed {
                text.push_str("]\n");
            }
            let read = |fast: bool| {
                let mut source = Source::from_reader("t.json", SourceFormat::JsonArray, Cursor::new(text.clone())).unwrap();
                if let crate::source::FormatReader::JsonArray(reader) = &mut source.reader {
                    reader.fast_elements = fast;
                }
                let items: Vec<_> = source.by_ref().map(|item| format!("{item:?}")).collect();
                (items, source.take_fatal().map(|e| e.to_string()))
            };
            proptest::prop_assert_eq!(read(true), read(false));
        }
    }

    #[test]
    fn the_word_scan_stops_where_a_byte_scan_stops() {
        // Every position, after fillers one bit away from the bytes looked
        // for (0xa2, 0xdc, 0x8a...) and after a real zero byte, where a
        // word trick could go wrong; from every start.
        for filler in [b'a', 0xa2, 0xdc, 0x8a, 0x0b, 0x23, 0x5d, 0x00, 0xff] {
            for len in 0..30 {
                for target in [Some(b'"'), Some(b'\\'), Some(b'\n'), None] {
                    for at in 0..len.max(1) {
                        let mut bytes = vec![filler; len];
                        if let (Some(byte), true) = (target, at < len) {
                            bytes[at] = byte;
                        }
                        for from in 0..=len {
                            let expected = (from..len)
                                .find(|&i| IN_STRING_SPECIAL[usize::from(bytes[i])])
                                .unwrap_or(len);
                            assert_eq!(
                                next_string_special(&bytes, from),
                                expected,
                                "{bytes:?} from {from}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn streams_elements_with_their_start_lines() {
        let data = "\u{feff}[\n  {\"id\": 1, \"s\": \"a,]}\\\"\"},\n  {\n    \"id\": 2,\n    \"n\": {\"x\": [1, 2]}\n  }\n]\n";
        assert_eq!(
            read_ok(data),
            [
                Ok((2, json!({"id": 1, "s": "a,]}\""}))),
                Ok((3, json!({"id": 2, "n": {"x": [1, 2]}}))),
            ]
        );
    }

    #[test]
    fn empty_arrays_and_one_line_arrays() {
        assert_eq!(read_ok("[]"), []);
        assert_eq!(read_ok(" [ \n ] \n"), []);
        assert_eq!(
            read_ok("[{\"a\":1},{\"a\":2}]"),
            [Ok((1, json!({"a": 1}))), Ok((1, json!({"a": 2})))]
        );
    }

    #[test]
    fn bad_elements_are_malformed_and_reading_goes_on() {
        let data =
            "[\n{\"id\": 1},\n{\"id\": },\n2,\n,\n{\"id\": 5} x,\n{\n\"id\" 6},\n{\"id\": 7},\n]";
        let items = read_ok(data);
        assert_eq!(items[0], Ok((2, json!({"id": 1}))));
        assert_eq!(
            items[1],
            Err((3, "invalid JSON at line 3 column 8: expected value".into()))
        );
        assert!(matches!(&items[2], Err((4, m)) if m.contains("expected a JSON object")));
        assert_eq!(
            items[3],
            Err((5, "empty array element (two commas in a row?)".into()))
        );
        assert_eq!(
            items[4],
            Err((
                6,
                "invalid JSON at line 6 column 11: trailing characters".into()
            ))
        );
        assert_eq!(
            items[5],
            Err((7, "invalid JSON at line 8 column 6: expected `:`".into()))
        );
        assert_eq!(items[6], Ok((9, json!({"id": 7}))));
        assert_eq!(items[7], Err((10, "trailing comma before `]`".into())));
        assert_eq!(items.len(), 8);
    }

    #[test]
    fn oversized_elements_are_skipped() {
        let big = format!("{{\"a\": \"{}\"}}", "x".repeat(MAX_RECORD_BYTES));
        let items = read_ok(&format!("[{big},\n{{\"id\": 2}}]"));
        assert!(matches!(&items[0], Err((1, m)) if m.contains("larger than")));
        assert_eq!(items[1], Ok((2, json!({"id": 2}))));
    }

    #[test]
    fn not_an_array_is_fatal_at_open() {
        for (data, message) in [
            (
                "",
                "t.json:1: expected a JSON array (`[`), but the file is empty",
            ),
            (
                "\n{\"a\": 1}\n",
                "t.json:2: expected a JSON array (`[`), but found `{`",
            ),
            (
                "\u{0}",
                "t.json:1: expected a JSON array (`[`), but found byte 0x00",
            ),
        ] {
            let err = Source::from_reader("t.json", SourceFormat::JsonArray, Cursor::new(data))
                .unwrap_err();
            assert_eq!(err.to_string(), message);
            assert!(err.hint().is_some_and(|hint| hint.contains("ndjson")));
        }
    }

    #[test]
    fn truncation_is_fatal_and_names_the_line() {
        let (items, fatal) = read_all("[\n{\"id\": 1},\n{\"id\":\n");
        assert_eq!(items, [Ok((2, json!({"id": 1})))]);
        let fatal = fatal.unwrap();
        assert_eq!(fatal.line(), Some(3));
        assert_eq!(
            fatal.to_string(),
            "t.json:3: the file ends inside the array element that starts at line 3"
        );

        // An element is only complete once its comma or `]` is seen.
        let (items, fatal) = read_all("[{\"id\": 1}\n\n");
        assert_eq!(items, []);
        assert!(
            fatal
                .unwrap()
                .to_string()
                .starts_with("t.json:1: the file ends inside")
        );

        let (_, fatal) = read_all("[\n\n");
        assert_eq!(
            fatal.unwrap().to_string(),
            "t.json:3: the file ends before the JSON array is closed"
        );
    }

    #[test]
    fn data_after_the_array_is_fatal() {
        let (items, fatal) = read_all("[{\"id\": 1}]\n\n[{\"id\": 2}]");
        assert_eq!(items.len(), 1);
        assert_eq!(
            fatal.unwrap().to_string(),
            "t.json:3: unexpected data after the end of the JSON array"
        );
        assert!(read_all("[{\"id\": 1}] \n\t\r\n").1.is_none());
    }
}
