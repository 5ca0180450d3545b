//! CSV: a header row, then one record per row.
//!
//! This drives `csv_core` directly rather than `csv::Reader`, for two reasons
//! found by testing `csv` 1.4: its `Position::line()` is wrong after blank
//! lines and with `\r\n` endings (a row is reported on the line before it),
//! and it buffers a row of any size (an unclosed quote swallows the rest of
//! the file into memory). Here, every consumed byte is seen, so lines are
//! counted exactly and a row past [`MAX_RECORD_BYTES`] is skipped unbuffered.

use std::collections::HashMap;
use std::io::{self, BufRead};
use std::sync::Arc;

use csv_core::ReadRecordResult;

use super::error::SourceError;
use super::{Input, MAX_RECORD_BYTES, Step, count_newlines};
use crate::{Field, FieldValue, Location, Record, RecordError, RecordErrorKind};

/// More fields than this in a row is malformed: it bounds the `ends` buffer
/// for rows like `,,,,,` that have many fields but no bytes of output.
const MAX_FIELDS: usize = 1 << 16;

/// The byte order mark a UTF-8 file may start with.
const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

const HEADER_HINT: &str = "the first row of a CSV file must name every column, once each";

pub(super) struct CsvReader {
    name: Arc<str>,
    input: Input,
    core: csv_core::Reader,
    columns: Vec<Arc<str>>,
    /// The current row's unescaped field bytes (reused): back to back, or
    /// for a plain row, with one comma between fields (a line without a
    /// quote is there as it is).
    out: Vec<u8>,
    /// Bytes between fields in `out`: 0 from csv_core, 1 for a plain row.
    gap: usize,
    /// A record's fields given back ([`Source::recycle`](super::Source::recycle)),
    /// their text refilled for the next row.
    pub(super) spare: Option<Vec<Field>>,
    /// Where each field of the current row ends in `out` (reused).
    ends: Vec<usize>,
    /// The 1-based line of the next byte to be consumed.
    line: u64,
    /// Whether plain rows skip csv_core ([`read_plain`](Self::read_plain));
    /// tests turn it off to check both paths read alike.
    plain_rows: bool,
    /// Whether csv_core has been given input yet.
    fed: bool,
}

/// A row's shape, its bytes being in `CsvReader::out` and `ends`.
struct RawRow {
    line: u64,
    fields: usize,
    /// Over [`MAX_RECORD_BYTES`] or [`MAX_FIELDS`]: its content was dropped.
    oversize: bool,
    /// Its quote characters are odd in number and it ran to the end of the
    /// input: a quoted field opened and never closed, and csv_core took the
    /// rest of the file for its content.
    unclosed_quote: bool,
}

impl CsvReader {
    /// Reads the header row.
    pub(super) fn new(name: Arc<str>, input: Input) -> Result<Self, SourceError> {
        let mut reader = CsvReader {
            name,
            input,
            // csv_core's defaults are RFC 4180 with any of \r, \n, \r\n ending a
            // row; it strips a UTF-8 BOM at the start of the input.
            core: csv_core::Reader::new(),
            columns: Vec::new(),
            out: vec![0; 4096],
            ends: vec![0; 64],
            gap: 0,
            spare: None,
            line: 1,
            plain_rows: true,
            fed: false,
        };
        let header = match reader.read_raw() {
            Ok(Some(header)) => header,
            Ok(None) => {
                return Err(SourceError::invalid(
                    &reader.name,
                    reader.line,
                    "the file is empty: expected a header row naming the columns",
                    Some(HEADER_HINT),
                ));
            }
            Err(err) => return Err(SourceError::read(&reader.name, reader.line, err)),
        };
        reader.columns = reader.parse_header(&header)?;
        Ok(reader)
    }

    fn parse_header(&self, header: &RawRow) -> Result<Vec<Arc<str>>, SourceError> {
        let invalid = |message: String| {
            SourceError::invalid(&self.name, header.line, message, Some(HEADER_HINT))
        };
        if header.oversize {
            return Err(invalid(format!(
                "the header row is larger than {MAX_RECORD_BYTES} bytes"
            )));
        }
        let mut columns = Vec::with_capacity(header.fields);
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(header.fields);
        for (index, bytes) in self.row_fields(header.fields).enumerate() {
            let number = index + 1;
            let text = std::str::from_utf8(bytes).map_err(|_| {
                invalid(format!("column {number} of the header is not valid UTF-8"))
            })?;
            // csv_core strips a BOM only when its first read has 3 bytes or
            // more; strip a leftover one here so it never ends up in a name.
            let text = if index == 0 {
                text.trim_start_matches('\u{feff}')
            } else {
                text
            };
            let text = text.trim();
            if text.is_empty() {
                return Err(invalid(format!(
                    "column {number} of the header has no name"
                )));
            }
            if let Some(first) = seen.insert(text, number) {
                return Err(invalid(format!(
                    "the header names column `{text}` twice (columns {first} and {number})"
                )));
            }
            columns.push(Arc::from(text));
        }
        Ok(columns)
    }

    pub(super) fn columns(&self) -> &[Arc<str>] {
        &self.columns
    }

    pub(super) fn next_step(&mut self) -> Step {
        let row = match self.next_row() {
            Ok(Some(row)) => row,
            Ok(None) => return Step::End,
            Err(step) => return step,
        };
        let location = Location {
            source: Arc::clone(&self.name),
            line: row.line,
            column: None,
            key: None,
        };
        let spare = self.spare.take();
        match self.build_fields(row.fields, spare) {
            Ok(fields) => Step::Record(Record { location, fields }),
            Err((column, message)) => Step::Bad(
                RecordError::new(location, RecordErrorKind::Malformed, message)
                    .with_field(&*self.columns[column]),
            ),
        }
    }

    /// For a first pass over identities: the line and the text of the
    /// fields at `wanted` ("" where there is none) of the next row that would
    /// be a record, without building it. Rows the run reports as malformed
    /// (ragged, oversized, not UTF-8) are skipped; `None` at the end or at a
    /// fatal error, which the run itself reports.
    pub(super) fn next_fields(&mut self, wanted: [Option<usize>; 2]) -> Option<(u64, [&str; 2])> {
        let (line, ranges) = match self.next_plain_fields(wanted) {
            Some(found) => found,
            None => self.next_row_fields(wanted)?,
        };
        // Checked as part of the row: these cannot fail.
        let text = |at: &std::ops::Range<usize>| {
            std::str::from_utf8(&self.out[at.clone()]).unwrap_or_default()
        };
        Some((line, [text(&ranges[0]), text(&ranges[1])]))
    }

    /// [`next_fields`](Self::next_fields) for any row: read by
    /// [`next_row`](Self::next_row), the wanted fields' ranges in `out`.
    fn next_row_fields(
        &mut self,
        wanted: [Option<usize>; 2],
    ) -> Option<(u64, [std::ops::Range<usize>; 2])> {
        loop {
            let row = match self.next_row() {
                Ok(Some(row)) => row,
                Ok(None) | Err(Step::Fatal(_)) => return None,
                Err(_) => continue,
            };
            if self.row_text(row.fields).is_none() {
                continue;
            }
            let range = |at: Option<usize>| match at.filter(|&i| i < row.fields) {
                Some(i) => self.field_range(i),
                None => 0..0,
            };
            return Some((row.line, wanted.map(range)));
        }
    }

    /// [`next_fields`](Self::next_fields) for a plain row (see
    /// [`read_plain`](Self::read_plain)) that is a record: as many fields as
    /// the header, all UTF-8. A row without a quote has its commas counted,
    /// not each located, and only the wanted fields are found: a first pass
    /// needs one or two of a row's fields. The line (or a quoted row's
    /// fields) goes into `out` and the wanted fields' ranges in it come back.
    /// `None`, having consumed nothing, for any other row, which `next_row`
    /// then reads and judges.
    fn next_plain_fields(
        &mut self,
        wanted: [Option<usize>; 2],
    ) -> Option<(u64, [std::ops::Range<usize>; 2])> {
        let plain = self.plain_line()?;
        if plain.quoted {
            let fields = self.split_quoted(plain.len)?;
            if fields != self.columns.len() || self.row_text(fields).is_none() {
                return None;
            }
            self.gap = 1;
            let ranges = wanted.map(|at| {
                at.filter(|&i| i < fields)
                    .map_or(0..0, |i| self.field_range(i))
            });
            return Some((self.consume_line(plain.len), ranges));
        }
        let line = &self.input.buffer()[..plain.len];
        if memchr::memchr_iter(b',', line).count() + 1 != self.columns.len()
            || std::str::from_utf8(line).is_err()
        {
            return None;
        }
        // Field `i` runs from the comma before it to the comma after it.
        let field = |i: usize| {
            let mut commas = memchr::memchr_iter(b',', line);
            let start = match i {
                0 => 0,
                _ => commas.nth(i - 1).map_or(line.len(), |comma| comma + 1),
            };
            let end = commas.next().unwrap_or(line.len());
            start..end
        };
        let ranges = wanted.map(|at| at.map_or(0..0, field));
        self.copy_line(plain.len);
        Some((self.consume_line(plain.len), ranges))
    }

    /// The next row shaped like a record (its bytes in `out` and `ends`),
    /// `None` at the end, or the step that reports why it is not one.
    fn next_row(&mut self) -> Result<Option<RawRow>, Step> {
        loop {
            let row = match self.read_raw() {
                Ok(Some(row)) => row,
                Ok(None) => return Ok(None),
                Err(err) => return Err(Step::Fatal(SourceError::read(&self.name, self.line, err))),
            };
            let malformed = |message: String| {
                let location = Location {
                    source: Arc::clone(&self.name),
                    line: row.line,
                    column: None,
                    key: None,
                };
                Err(Step::Bad(RecordError::new(
                    location,
                    RecordErrorKind::Malformed,
                    message,
                )))
            };
            if row.unclosed_quote {
                return Err(Step::Fatal(SourceError::invalid(
                    &self.name,
                    row.line,
                    format!(
                        "a quoted field opened on line {} is never closed; lines {} to {} (the end of the file) were not read",
                        row.line,
                        row.line,
                        self.line.max(row.line)
                    ),
                    Some("close the quote; a quote inside a quoted field is written twice (\"\")"),
                )));
            }
            if row.oversize {
                return malformed(format!(
                    "row is larger than {MAX_RECORD_BYTES} bytes or has more than {MAX_FIELDS} fields (is a quote left open?)"
                ));
            }
            if row.fields != self.columns.len() {
                if row.fields == 1
                    && self
                        .row_fields(1)
                        .all(|f| f.iter().all(u8::is_ascii_whitespace))
                {
                    // A whitespace-only line in a multi-column file is blank, not a record.
                    continue;
                }
                return malformed(format!(
                    "row has {} but the header has {}",
                    plural(row.fields, "field"),
                    self.columns.len()
                ));
            }
            return Ok(Some(row));
        }
    }

    /// The current row's fields as text, or the column and the reason one
    /// is not; into `spare`'s strings when it has this file's fields.
    fn build_fields(
        &self,
        count: usize,
        spare: Option<Vec<Field>>,
    ) -> Result<Vec<Field>, (usize, String)> {
        let Some(row) = self.row_text(count) else {
            return self.build_fields_checked(count);
        };
        // This file's fields, in its columns' order, as the last row left them.
        let fits = |fields: &Vec<Field>| {
            fields.len() == count
                && (fields.iter().zip(&self.columns)).all(|(field, column)| {
                    Arc::ptr_eq(&field.name, column) && matches!(field.value, FieldValue::Text(_))
                })
        };
        if let Some(mut fields) = spare.filter(fits) {
            for (i, field) in fields.iter_mut().enumerate() {
                if let FieldValue::Text(text) = &mut field.value {
                    text.clear();
                    text.push_str(&row[self.field_range(i)]);
                }
            }
            return Ok(fields);
        }
        Ok(self.columns[..count]
            .iter()
            .enumerate()
            .map(|(i, name)| Field {
                name: Arc::clone(name),
                value: FieldValue::Text(row[self.field_range(i)].to_owned()),
            })
            .collect())
    }

    /// The current row's `count` fields' bytes as one text, if every field
    /// is UTF-8: one check of the whole row is cheaper than one per field.
    fn row_text(&self, count: usize) -> Option<&str> {
        let row_end = count.checked_sub(1).map_or(0, |last| self.ends[last]);
        let row = std::str::from_utf8(&self.out[..row_end]).ok()?;
        // A field boundary that splits a character makes both fields invalid.
        self.ends[..count]
            .iter()
            .all(|&end| row.is_char_boundary(end))
            .then_some(row)
    }

    /// Where field `i` of the current row lies in `out`.
    fn field_range(&self, i: usize) -> std::ops::Range<usize> {
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1] + self.gap,
        };
        start..self.ends[i]
    }

    /// [`build_fields`](Self::build_fields), checking each field on its own
    /// to name the one that is not UTF-8.
    fn build_fields_checked(&self, count: usize) -> Result<Vec<Field>, (usize, String)> {
        let mut fields = Vec::with_capacity(count);
        for (column, (bytes, name)) in self.row_fields(count).zip(&self.columns).enumerate() {
            let text = std::str::from_utf8(bytes).map_err(|err| {
                (
                    column,
                    format!("invalid UTF-8 after {} valid bytes", err.valid_up_to()),
                )
            })?;
            fields.push(Field {
                name: Arc::clone(name),
                value: FieldValue::Text(text.to_owned()),
            });
        }
        Ok(fields)
    }

    /// The first `count` fields of the current row.
    fn row_fields(&self, count: usize) -> impl Iterator<Item = &[u8]> {
        (0..count).map(|i| &self.out[self.field_range(i)])
    }

    /// Reads the next row into `out` and `ends`; `None` at the end of input.
    fn read_raw(&mut self) -> io::Result<Option<RawRow>> {
        if let Some(row) = self.read_plain() {
            self.gap = 1;
            return Ok(Some(row));
        }
        self.gap = 0;
        let (mut out_len, mut ends_len) = (0, 0);
        let mut start_line = None;
        let mut oversize = false;
        let mut quotes = 0u64;
        loop {
            let input = match self.input.fill_buf() {
                Ok(input) => input,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            let at_end = input.is_empty();
            if !self.fed && input == UTF8_BOM {
                // csv_core, given a BOM alone (a pipe may hand it out on its
                // own), strips it and takes the nothing left for the end of
                // the input. Dropped here, the next read's bytes start the file.
                self.input.consume(UTF8_BOM.len());
                continue;
            }
            self.fed = true;
            let (result, consumed, written, ended) =
                self.core
                    .read_record(input, &mut self.out[out_len..], &mut self.ends[ends_len..]);
            let consumed_bytes = &input[..consumed];
            if start_line.is_none() {
                // csv_core skips blank lines (and the `\n` of a `\r\n` that
                // ended the previous row); the row starts after them.
                if let Some(at) = consumed_bytes
                    .iter()
                    .position(|&b| b != b'\n' && b != b'\r')
                {
                    start_line = Some(self.line + count_newlines(&consumed_bytes[..at]));
                }
            }
            self.line += count_newlines(consumed_bytes);
            quotes += count_quotes(consumed_bytes);
            self.input.consume(consumed);
            out_len += written;
            ends_len += ended;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    if self.out.len() < MAX_RECORD_BYTES {
                        let bigger = (self.out.len() * 2).min(MAX_RECORD_BYTES);
                        self.out.resize(bigger, 0);
                    } else {
                        // Keep parsing to find the row's end, overwriting
                        // its content rather than keeping it.
                        oversize = true;
                        out_len = 0;
                    }
                }
                ReadRecordResult::OutputEndsFull => {
                    if self.ends.len() < MAX_FIELDS {
                        let bigger = (self.ends.len() * 2).min(MAX_FIELDS);
                        self.ends.resize(bigger, 0);
                    } else {
                        oversize = true;
                        ends_len = 0;
                    }
                }
                ReadRecordResult::Record => {
                    return Ok(Some(RawRow {
                        line: start_line.unwrap_or(self.line),
                        fields: ends_len,
                        oversize,
                        unclosed_quote: at_end && quotes % 2 == 1,
                    }));
                }
                ReadRecordResult::End => return Ok(None),
            }
        }
    }
}

impl CsvReader {
    /// The common row, read without csv_core: one whole in the read buffer,
    /// ended by `\n`, without a `\r`, each quoted field closed on it (see
    /// [`split_fields`]). csv_core would split it at its commas and copy
    /// the fields one by one; this copies a line without a quote once,
    /// commas kept ([`field_range`](Self::field_range) skips them), and a
    /// quoted row's fields with one byte between them, at a fraction of the
    /// cost. `None` for any other row (and the header, where csv_core strips
    /// a BOM), which csv_core then reads; it is at the start of a row either
    /// way, having been given nothing in between.
    fn read_plain(&mut self) -> Option<RawRow> {
        let plain = self.plain_line()?;
        let fields = match plain.quoted {
            true => self.split_quoted(plain.len)?,
            false => self.split_unquoted(plain.len)?,
        };
        Some(RawRow {
            line: self.consume_line(plain.len),
            fields,
            oversize: false,
            unclosed_quote: false,
        })
    }

    /// Where each field of the next line (without a quote, `len` bytes)
    /// ends, into `ends`, and the line into `out`; the number of fields, or
    /// `None` past [`MAX_FIELDS`].
    fn split_unquoted(&mut self, len: usize) -> Option<usize> {
        let line = &self.input.buffer()[..len];
        let mut fields = 0;
        for comma in memchr::memchr_iter(b',', line).chain([line.len()]) {
            if fields == self.ends.len() {
                grow_ends(&mut self.ends)?;
            }
            self.ends[fields] = comma;
            fields += 1;
        }
        self.copy_line(len);
        Some(fields)
    }

    /// The fields of the next line (with a quote, `len` bytes) into `out`
    /// and `ends`, as [`split_fields`] splits them.
    fn split_quoted(&mut self, len: usize) -> Option<usize> {
        let line = &self.input.buffer()[..len];
        split_fields(line, &mut self.out, &mut self.ends)
    }

    /// The next line when it is a plain row: whole in the read buffer,
    /// ended by `\n`, not empty, not over [`MAX_RECORD_BYTES`], without a
    /// `\r`. `None` for any other row, and before the header is read;
    /// nothing is consumed either way.
    fn plain_line(&mut self) -> Option<PlainLine> {
        if self.columns.is_empty() || !self.plain_rows {
            return None;
        }
        // A read error is csv_core's path to report.
        let buffer = self.input.fill_buf().ok()?;
        let line = &buffer[..memchr::memchr(b'\n', buffer)?];
        if line.is_empty() || line.len() > MAX_RECORD_BYTES {
            return None;
        }
        let quoted = match memchr::memchr2(b'"', b'\r', line) {
            None => false,
            Some(at) if line[at] == b'\r' => return None,
            Some(at) => match memchr::memchr(b'\r', &line[at..]) {
                Some(_) => return None,
                None => true,
            },
        };
        Some(PlainLine {
            len: line.len(),
            quoted,
        })
    }

    /// Copies the next `len` bytes, a line without a quote, into `out` as
    /// they are.
    fn copy_line(&mut self, len: usize) {
        if self.out.len() < len {
            self.out.resize(len.next_power_of_two(), 0);
        }
        self.out[..len].copy_from_slice(&self.input.buffer()[..len]);
    }

    /// Consumes the plain line of `len` bytes [`plain_line`](Self::plain_line)
    /// found, with its `\n`, and counts it. Returns its line number.
    fn consume_line(&mut self, len: usize) -> u64 {
        self.input.consume(len + 1);
        self.line += 1;
        self.line - 1
    }
}

/// A line [`CsvReader::plain_line`] found.
#[derive(Clone, Copy)]
struct PlainLine {
    /// Its length, without the `\n`.
    len: usize,
    /// Whether it has a `"`.
    quoted: bool,
}

/// Doubles `ends`, up to [`MAX_FIELDS`]; `None` when it is there already.
fn grow_ends(ends: &mut Vec<usize>) -> Option<()> {
    if ends.len() >= MAX_FIELDS {
        return None;
    }
    let bigger = (ends.len() * 2).min(MAX_FIELDS);
    ends.resize(bigger, 0);
    Some(())
}

/// Splits `line` as csv_core does when each of its quoted fields closes
/// on it: a `"` at a field's start opens a quoted field, in which `""` is
/// a quote and a lone `"` closes it; any other `"` is text. The fields'
/// text goes into `out` one byte (a comma) apart, and their ends into
/// `ends`; text without a quote is copied in one piece. Returns the number
/// of fields, or `None` for a quote that does not close on the line
/// (csv_core then reads the row, across lines) or past [`MAX_FIELDS`].
fn split_fields(line: &[u8], out: &mut Vec<u8>, ends: &mut Vec<usize>) -> Option<usize> {
    fn copy(out: &mut [u8], text: &[u8], written: &mut usize) {
        out[*written..*written + text.len()].copy_from_slice(text);
        *written += text.len();
    }
    // The text is never longer than the line: quotes go, commas stay.
    if out.len() < line.len() {
        out.resize(line.len().next_power_of_two(), 0);
    }
    // `line[copied..]` is still to be copied to `out[written..]`; the
    // commas before `scanned` have ended their fields.
    let (mut copied, mut scanned, mut written, mut fields) = (0, 0, 0, 0);
    let mut field_start = 0;
    loop {
        let quote = memchr::memchr(b'"', &line[scanned..]).map(|at| scanned + at);
        let text_end = quote.unwrap_or(line.len());
        for comma in memchr::memchr_iter(b',', &line[scanned..text_end]) {
            if fields == ends.len() {
                grow_ends(ends)?;
            }
            ends[fields] = written + scanned + comma - copied;
            fields += 1;
            field_start = scanned + comma + 1;
        }
        let Some(open) = quote else {
            copy(out, &line[copied..], &mut written);
            break;
        };
        if open != field_start {
            // A quote past a field's start is text, to csv_core too.
            scanned = open + 1;
            continue;
        }
        copy(out, &line[copied..open], &mut written);
        let mut at = open + 1;
        loop {
            let close = at + memchr::memchr(b'"', &line[at..])?;
            copy(out, &line[at..close], &mut written);
            at = close + 1;
            if line.get(at) != Some(&b'"') {
                break;
            }
            copy(out, b"\"", &mut written);
            at += 1;
        }
        // Text after the closing quote is the field's too, to csv_core as
        // well; the comma ends the field in the next round.
        match line.get(at) {
            None => break,
            Some(_) => (copied, scanned) = (at, at),
        }
    }
    if fields == ends.len() {
        grow_ends(ends)?;
    }
    ends[fields] = written;
    Some(fields + 1)
}

/// The number of `"` in `bytes` (memchr counts with vector instructions; a
/// filter-count did not vectorize).
fn count_quotes(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'"', bytes).count() as u64
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Read};

    use crate::source::{Source, SourceFormat};
    use crate::{FieldValue, RecordErrorKind};

    fn open(data: impl AsRef<[u8]>) -> Result<Source, crate::source::SourceError> {
        Source::from_reader(
            "t.csv",
            SourceFormat::Csv,
            Cursor::new(data.as_ref().to_vec()),
        )
    }

    /// Hands out its bytes `sizes` at a time, in turn, as a pipe may.
    struct Chunked {
        data: Cursor<Vec<u8>>,
        sizes: Vec<usize>,
        reads: usize,
    }

    impl Read for Chunked {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let size = self.sizes.get(self.reads % self.sizes.len().max(1));
            self.reads += 1;
            let len = size.map_or(buf.len(), |&size| size.min(buf.len()));
            self.data.read(&mut buf[..len])
        }
    }

    /// [`open`], the data read `sizes` bytes at a time (whole reads for none).
    fn open_chunked(data: &[u8], sizes: &[usize]) -> Result<Source, crate::source::SourceError> {
        let data = Cursor::new(data.to_vec());
        let reads = 0;
        let sizes = sizes.to_vec();
        Source::from_reader("t.csv", SourceFormat::Csv, Chunked { data, sizes, reads })
    }

    /// What a source reads from `data` (`sizes` bytes at a time), with plain
    /// rows on the fast path or through csv_core: its items and fatal error.
    fn read_on_path(
        data: &[u8],
        sizes: &[usize],
        plain_rows: bool,
    ) -> (Vec<String>, Option<String>) {
        let mut source = open_chunked(data, sizes).unwrap();
        if let crate::source::FormatReader::Csv(reader) = &mut source.reader {
            reader.plain_rows = plain_rows;
        }
        let items = source.by_ref().map(|item| format!("{item:?}")).collect();
        (items, source.take_fatal().map(|e| e.to_string()))
    }

    /// The rows a first pass reads from `data` ([`read_on_path`]'s way):
    /// each one's line and `wanted` fields.
    fn first_pass_on_path(
        data: &[u8],
        sizes: &[usize],
        plain_rows: bool,
        wanted: [Option<usize>; 2],
    ) -> Vec<(u64, String, String)> {
        let mut source = open_chunked(data, sizes).unwrap();
        let crate::source::FormatReader::Csv(reader) = &mut source.reader else {
            unreachable!("a CSV source");
        };
        reader.plain_rows = plain_rows;
        let mut rows = Vec::new();
        while let Some((line, [a, b])) = reader.next_fields(wanted) {
            rows.push((line, a.to_owned(), b.to_owned()));
        }
        rows
    }

    /// (line, values) for a record, (line, message) for an error.
    type Item = Result<(u64, Vec<String>), (u64, String)>;

    fn read_all(data: impl AsRef<[u8]>) -> Vec<Item> {
        let mut source = open(data).unwrap();
        let items = source
            .by_ref()
            .map(|item| match item {
                Ok(record) => Ok((
                    record.location.line,
                    record
                        .fields
                        .iter()
                        .map(|f| match &f.value {
                            FieldValue::Text(text) => text.clone(),
                            FieldValue::Json(value) => panic!("CSV gave JSON {value}"),
                        })
                        .collect(),
                )),
                Err(err) => {
                    assert_eq!(err.kind, RecordErrorKind::Malformed);
                    Err((err.location.line, err.to_string()))
                }
            })
            .collect();
        assert!(source.take_fatal().is_none());
        items
    }

    fn ok(line: u64, values: &[&str]) -> Item {
        Ok((line, values.iter().map(|v| v.to_string()).collect()))
    }

    #[test]
    fn reads_rows_with_their_lines() {
        assert_eq!(
            read_all("id,name\n1,Ann\n2,\n"),
            [ok(2, &["1", "Ann"]), ok(3, &["2", ""])]
        );
    }

    #[test]
    fn counts_lines_right_with_crlf_blank_lines_and_no_final_newline() {
        assert_eq!(
            read_all("id,name\r\n\r\n1,a\r\n\n\n2,b\r\n3,c"),
            [ok(3, &["1", "a"]), ok(6, &["2", "b"]), ok(7, &["3", "c"])]
        );
    }

    #[test]
    fn quoted_fields_span_lines_and_keep_quotes_and_commas() {
        let data = "id,note\n1,\"two\nlines, \"\"quoted\"\"\"\n2,x\n";
        assert_eq!(
            read_all(data),
            [ok(2, &["1", "two\nlines, \"quoted\""]), ok(4, &["2", "x"])]
        );
    }

    #[test]
    fn ragged_rows_are_malformed_and_reading_goes_on() {
        assert_eq!(
            read_all("a,b,c\n1,2,3\n1,2\n1,2,3,4\n   \n4,5,6\n"),
            [
                ok(2, &["1", "2", "3"]),
                Err((3, "t.csv:3: row has 2 fields but the header has 3".into())),
                Err((4, "t.csv:4: row has 4 fields but the header has 3".into())),
                ok(6, &["4", "5", "6"]),
            ]
        );
    }

    #[test]
    fn invalid_utf8_names_the_column() {
        let items = read_all(b"id,name\n1,\xff\n2,b\n");
        assert_eq!(
            items,
            [
                Err((
                    2,
                    "t.csv:2: field `name`: invalid UTF-8 after 0 valid bytes".into()
                )),
                ok(3, &["2", "b"])
            ]
        );
    }

    #[test]
    fn a_character_split_between_two_fields_is_invalid_in_both() {
        // `\xc3\xa9` is `é`: valid across the row's bytes, invalid in each field.
        let items = read_all(b"id,name,city\n1,a\xc3,\xa9b\n2,\xc3\xa9,c\n");
        assert_eq!(
            items,
            [
                Err((
                    2,
                    "t.csv:2: field `name`: invalid UTF-8 after 1 valid bytes".into()
                )),
                ok(3, &["2", "\u{e9}", "c"])
            ]
        );
    }

    #[test]
    fn header_is_trimmed_bom_stripped_and_names_shared() {
        let mut source = open("\u{feff}id , Email\n1,a\n2,b\n").unwrap();
        let columns: Vec<&str> = source.columns().unwrap().iter().map(|c| &**c).collect();
        assert_eq!(columns, ["id", "Email"]);
        let first = source.next().unwrap().unwrap();
        let second = source.next().unwrap().unwrap();
        assert_eq!(first.location.line, 2);
        assert!(std::sync::Arc::ptr_eq(
            &first.fields[1].name,
            &second.fields[1].name
        ));
        assert!(std::sync::Arc::ptr_eq(
            &first.fields[1].name,
            &source.columns().unwrap()[1]
        ));
    }

    #[test]
    fn bom_is_stripped_even_when_read_one_byte_at_a_time() {
        let mut source = open_chunked(b"\xef\xbb\xbfid\n7\n", &[1]).unwrap();
        assert_eq!(&*source.columns().unwrap()[0], "id");
        assert_eq!(source.next().unwrap().unwrap().location.line, 2);
    }

    #[test]
    fn a_bom_read_alone_is_not_taken_for_the_end_of_the_file() {
        // A pipe whose writer flushes the BOM on its own: csv_core, given
        // the BOM alone, strips it and takes what is left, nothing, for the
        // end of the input.
        let mut source = open_chunked(b"\xef\xbb\xbfid,name\n1,Ann\n", &[3, 1 << 16]).unwrap();
        assert_eq!(&*source.columns().unwrap()[0], "id");
        let record = source.next().unwrap().unwrap();
        assert_eq!((record.location.line, record.fields.len()), (2, 2));
        assert!(source.next().is_none());
    }

    #[test]
    fn bad_headers_are_fatal_and_name_the_column() {
        let cases = [
            (
                "",
                "t.csv:1: the file is empty: expected a header row naming the columns",
            ),
            (
                "\n\n",
                "t.csv:3: the file is empty: expected a header row naming the columns",
            ),
            ("id,,name\n", "t.csv:1: column 2 of the header has no name"),
            (
                "\nid, name,name \n",
                "t.csv:2: the header names column `name` twice (columns 2 and 3)",
            ),
        ];
        for (data, message) in cases {
            let err = open(data).unwrap_err();
            assert_eq!(err.to_string(), message);
            assert!(err.hint().is_some());
        }
    }

    #[test]
    fn an_unclosed_quote_is_fatal_and_names_the_line_it_opened_on() {
        for data in [
            "id,name\n1,A\n2,\"never closed\n3,C\n".to_owned(),
            format!(
                "id,note\n1,A\n2,\"{}\n3,b\n",
                "x".repeat(super::MAX_RECORD_BYTES + 10)
            ),
        ] {
            let mut source = open(&data).unwrap();
            let first = source.next().unwrap().unwrap();
            assert_eq!(first.location.line, 2);
            assert!(
                source.next().is_none(),
                "nothing after the open quote is a record"
            );
            let fatal = source.take_fatal().expect("an unclosed quote is fatal");
            assert_eq!(fatal.line(), Some(3));
            assert!(fatal.to_string().contains("opened on line 3"), "{fatal}");
            assert!(fatal.to_string().contains("not read"), "{fatal}");
        }
        // A closed quote at the very end of a file without a final newline is fine.
        assert_eq!(read_all("id,name\n1,\"A, B\""), [ok(2, &["1", "A, B"])]);
    }

    #[test]
    fn oversized_rows_are_skipped_without_stopping() {
        let data = format!(
            "id,note\n1,\"{}\"\n2,b\n",
            "x".repeat(super::MAX_RECORD_BYTES)
        );
        let items = read_all(&data);
        assert!(matches!(&items[0], Err((2, _))));
        assert_eq!(items[1], ok(3, &["2", "b"]));

        let data = format!("id\n{}\n2\n", ",".repeat(super::MAX_FIELDS + 1));
        let items = read_all(&data);
        assert!(matches!(&items[0], Err((2, _))));
        assert_eq!(items[1], ok(3, &["2"]));
    }

    #[test]
    fn a_recycled_record_s_fields_are_refilled_with_the_next_row() {
        let data: &[u8] =
            b"id,name\n1,Ann\n2,\"Bob, Jr\"\n3,\xff\n4,\n5,Eve Longer Name\n6,x,y\n7,Zed\n";
        let fresh = read_all(data);
        let mut source = open(data).unwrap();
        let mut recycled = Vec::new();
        while let Some(item) = source.next() {
            recycled.push(
                item.as_ref()
                    .map(|r| r.location.line)
                    .map_err(|e| e.to_string()),
            );
            if let Ok(record) = item {
                let values: Vec<String> = record
                    .fields
                    .iter()
                    .map(|f| match &f.value {
                        FieldValue::Text(text) => text.clone(),
                        FieldValue::Json(value) => panic!("CSV gave JSON {value}"),
                    })
                    .collect();
                assert_eq!(
                    fresh
                        .iter()
                        .find(|i| matches!(i, Ok((l, _)) if *l == record.location.line)),
                    Some(&Ok((record.location.line, values)))
                );
                source.recycle(record);
            }
        }
        assert_eq!(recycled.len(), fresh.len());
    }

    /// One piece of a CSV file for [`plain_rows_read_as_csv_core_reads_them`].
    fn piece(kind: u8, n: usize) -> String {
        match kind % 22 {
            0 => format!("{n},name {n},x\n"),
            1 => format!("{n},\"quoted, with comma\",y\n"),
            2 => format!("{n},\"two\nlines\",z\r\n"),
            3 => "\n".into(),
            4 => format!("{n},a,b\r\n"),
            5 => format!("{n},a\rb,c\n"),
            6 => format!("{n},ragged\n"),
            7 => "   \n".into(),
            8 => format!("{n},\u{e9}t\u{e9},\"q\"\"q\"\n"),
            9 => format!("{n},{},long\n", "x".repeat(700)),
            10 => format!("{n},,\n"),
            12 => format!("{n},\"a \"\"b\"\", c\",\"x\"\n"),
            13 => format!("{n},\"ab\"cd,e\n"),
            14 => format!("{n},a\"b,c\n"),
            15 => format!("{n},\"\",\"\"\n"),
            16 => format!("{n},\"span\nrow, on two\",z\n"),
            17 => format!("\"{n}\",\"x\" ,\"\u{e9},\"\n"),
            18 => format!("\"{n}\",b,\"c\"\"\"\n"),
            19 => format!("{n},a\"b\",c\n"),
            20 => format!("{n},\"x\"y\"z,w\n"),
            21 => format!("{n}, \"q\",\"r\"\n"),
            _ => format!("{n},a,b,c,d\n"),
        }
    }

    /// A file of [`piece`]s after a 3-column header, for the property tests;
    /// files past the 64 KiB read buffer have rows across its end, and one
    /// `x` may be turned into a byte that is not UTF-8.
    fn generated_file(
        kinds: &[u8],
        no_final_newline: bool,
        bad_utf8_at: proptest::sample::Index,
    ) -> Vec<u8> {
        let mut data = String::from("id,name,other\n");
        for (n, kind) in kinds.iter().enumerate() {
            data.push_str(&piece(*kind, n));
        }
        if no_final_newline {
            data.pop();
        }
        let mut bytes = data
            .repeat(if kinds.len() > 200 { 60 } else { 1 })
            .into_bytes();
        let at = bad_utf8_at.index(bytes.len());
        if bytes[at] == b'x' {
            bytes[at] = 0xff;
        }
        bytes
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn plain_rows_read_as_csv_core_reads_them(
            kinds in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..400),
            no_final_newline: bool,
            bad_utf8_at in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let bytes = generated_file(&kinds, no_final_newline, bad_utf8_at);
            proptest::prop_assert_eq!(read_on_path(&bytes, &[], true), read_on_path(&bytes, &[], false));
        }

        /// A first pass reads the same lines and fields whether plain rows
        /// are found by counting their commas or read as csv_core reads them.
        #[test]
        fn plain_rows_first_pass_fields_as_csv_core_reads_them(
            kinds in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..400),
            no_final_newline: bool,
            bad_utf8_at in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let bytes = generated_file(&kinds, no_final_newline, bad_utf8_at);
            for wanted in [[Some(0), None], [Some(2), Some(1)], [None, Some(2)], [Some(5), Some(0)]] {
                proptest::prop_assert_eq!(
                    first_pass_on_path(&bytes, &[], true, wanted),
                    first_pass_on_path(&bytes, &[], false, wanted),
                    "{:?}", wanted
                );
            }
        }

        /// Both paths read alike on any text of CSV's special bytes, read
        /// whole or a few bytes at a time: records, errors, the fatal
        /// error, and a first pass's fields.
        #[test]
        fn any_bytes_read_alike_on_both_paths(
            pieces in proptest::collection::vec(0..RANDOM_PIECES.len(), 0..60),
            header_columns in 1usize..4,
            sizes in proptest::collection::vec(1usize..20, 0..4),
        ) {
            let mut bytes = ["id\n", "id,b\n", "id,b,c\n"][header_columns - 1].as_bytes().to_vec();
            for piece in pieces {
                bytes.extend_from_slice(RANDOM_PIECES[piece]);
            }
            let text = String::from_utf8_lossy(&bytes);
            for sizes in [&[][..], &sizes] {
                proptest::prop_assert_eq!(
                    read_on_path(&bytes, sizes, true),
                    read_on_path(&bytes, sizes, false),
                    "{:?} {:?}", sizes, text
                );
                for wanted in [[Some(0), None], [Some(1), Some(0)], [None, Some(2)]] {
                    proptest::prop_assert_eq!(
                        first_pass_on_path(&bytes, sizes, true, wanted),
                        first_pass_on_path(&bytes, sizes, false, wanted),
                        "{:?} {:?} {:?}", sizes, wanted, text
                    );
                }
            }
        }
    }

    /// What [`any_bytes_read_alike_on_both_paths`] builds files of: CSV's
    /// special bytes, text, multi-byte characters, bytes that are not
    /// UTF-8, and a BOM.
    const RANDOM_PIECES: &[&[u8]] = &[
        b"\"",
        b"\"",
        b"\"\"",
        b",",
        b",",
        b"\n",
        b"\n",
        b"\r",
        b"\r\n",
        b"a",
        b"b",
        b" ",
        b"\t",
        b"\xc3\xa9",
        b"\xe2\x82\xac",
        b"\xff",
        b"\xc3",
        b"\xef\xbb\xbf",
    ];
}
