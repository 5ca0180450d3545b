//! Streaming customer records out of CSV, NDJSON and JSON array files.
//!
//! A [`Source`] is an iterator of `Result<Record, RecordError>`. It reads its
//! input in 64 KiB buffers and holds at most one record (capped at
//! [`MAX_RECORD_BYTES`]) at a time, so memory does not grow with file size.
//!
//! # Two kinds of error
//!
//! * **Per-record** problems (a ragged CSV row, invalid UTF-8, a line that is
//!   not a JSON object, an oversized record) are yielded as `Err(RecordError)`
//!   with kind [`Malformed`](crate::RecordErrorKind::Malformed) and the
//!   record's file and line. Iteration continues with the next record.
//! * **Fatal** problems ([`SourceError`]) stop the source. Those found while
//!   opening (missing file, unknown extension, bad CSV header, a `.json` file
//!   that is not an array) are returned by the constructors. Those found while
//!   reading (an I/O error mid-file, a JSON array cut short, data after the
//!   array's closing `]`) end the iteration: `next()` returns `None`, and
//!   [`Source::take_fatal`] returns the error. **Always call `take_fatal` when
//!   the iterator ends**: `None` alone does not mean the whole input was read.
//!
//! # Formats
//!
//! * **CSV** ([RFC 4180]): a header row names the columns (trimmed, a UTF-8
//!   BOM stripped; empty or duplicate names are fatal). Every value is
//!   [`FieldValue::Text`](crate::FieldValue::Text), empty ones included, and
//!   every [`Field::name`](crate::Field::name) is the header's shared
//!   `Arc<str>`. Blank and whitespace-only lines are skipped (the latter only
//!   when there is more than one column). A row with a different number of
//!   fields than the header is malformed.
//! * **NDJSON** (`.ndjson`, `.jsonl`, and `-` for stdin): one JSON object per
//!   line; blank lines are skipped; a line over 1 MiB is malformed and
//!   skipped without being buffered.
//! * **JSON array** (`.json`): one top-level array of objects, streamed
//!   element by element; a malformed element is reported and the scan resumes
//!   at the next top-level comma.
//!
//! JSON values become [`FieldValue::Json`](crate::FieldValue::Json), one
//! field per top-level key, **in the key order of the source**. A duplicate
//! key makes the record malformed.
//!
//! [`Location::line`](crate::Location::line) is the 1-based physical line (as
//! counted by `\n`) where the record starts, also when an earlier CSV record
//! spans several lines.
//!
//! [RFC 4180]: https://www.rfc-editor.org/rfc/rfc4180

mod counting;
mod csv;
mod error;
mod json_array;
mod json_identity;
mod json_object;
mod ndjson;
pub mod postgres;

pub(crate) use json_identity::IdentityScan;
pub(crate) use json_object::UnparsedObject;

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::iter::FusedIterator;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use counting::ReadProgress;
pub use error::SourceError;

use crate::{Record, RecordError};
use counting::CountingReader;

/// The largest record a source accepts: a CSV row, an NDJSON line or a JSON
/// array element over this many bytes is malformed. It bounds memory per
/// record, well above Segment's own 32,000-byte event limit.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Read buffer size: large enough that syscalls do not dominate, small enough
/// to be irrelevant to the memory budget.
const BUFFER_BYTES: usize = 64 * 1024;

/// The buffered, counted input every format reads from.
type Input = BufReader<CountingReader<Box<dyn Read + Send>>>;

/// The format of a source's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// Newline-delimited JSON: one object per line.
    Ndjson,
    /// One JSON array of objects.
    JsonArray,
    /// Rows of a PostgreSQL table or query ([`postgres`]).
    Postgres,
}

impl SourceFormat {
    /// The format a file's extension stands for, ignoring case: `.csv`,
    /// `.ndjson` or `.jsonl`, and `.json`. `None` for anything else.
    ///
    /// ```
    /// use std::path::Path;
    /// use customer_sync::source::SourceFormat;
    ///
    /// assert_eq!(SourceFormat::from_path(Path::new("in/Customers.CSV")), Some(SourceFormat::Csv));
    /// assert_eq!(SourceFormat::from_path(Path::new("a.jsonl")), Some(SourceFormat::Ndjson));
    /// assert_eq!(SourceFormat::from_path(Path::new("a.txt")), None);
    /// ```
    pub fn from_path(path: &Path) -> Option<SourceFormat> {
        let extension = path.extension()?.to_str()?;
        if extension.eq_ignore_ascii_case("csv") {
            Some(SourceFormat::Csv)
        } else if extension.eq_ignore_ascii_case("ndjson")
            || extension.eq_ignore_ascii_case("jsonl")
        {
            Some(SourceFormat::Ndjson)
        } else if extension.eq_ignore_ascii_case("json") {
            Some(SourceFormat::JsonArray)
        } else {
            None
        }
    }

    /// A short lowercase name: `csv`, `ndjson` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Csv => "csv",
            SourceFormat::Ndjson => "ndjson",
            SourceFormat::JsonArray => "json",
            SourceFormat::Postgres => "postgres",
        }
    }
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stream of records from one file or reader.
///
/// Iterate it for `Result<Record, RecordError>`s, then call
/// [`take_fatal`](Source::take_fatal) to learn whether it stopped early (see
/// the [module docs](self)).
///
/// # Example
/// ```
/// use std::io::Cursor;
/// use customer_sync::source::{Source, SourceFormat};
///
/// let data = "id,email\n1,a@example.com\n2\n3,c@example.com\n";
/// let mut source = Source::from_reader("customers.csv", SourceFormat::Csv, Cursor::new(data))?;
/// assert_eq!(source.columns().unwrap().len(), 2);
///
/// let mut emails = Vec::new();
/// let mut bad = Vec::new();
/// for item in &mut source {
///     match item {
///         Ok(record) => emails.push(format!("{:?}", record.get("email").unwrap())),
///         Err(error) => bad.push(error.to_string()),
///     }
/// }
/// if let Some(fatal) = source.take_fatal() {
///     return Err(fatal.into());
/// }
/// assert_eq!(emails.len(), 2);
/// assert_eq!(bad, ["customers.csv:3: row has 1 field but the header has 2"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Source {
    name: Arc<str>,
    format: SourceFormat,
    total_bytes: Option<u64>,
    /// Records expected, for a source without a byte count.
    expected_records: Option<u64>,
    progress: ReadProgress,
    reader: FormatReader,
    fatal: Option<SourceError>,
    finished: bool,
    /// Items read ahead by [`Source::peek`] and [`Source::sample`], handed
    /// out first, in order.
    ahead: VecDeque<Result<Record, RecordError>>,
    /// The file it reads, when it can be opened again.
    path: Option<PathBuf>,
    /// Keyset mode of a PostgreSQL source: the last row read.
    cursor: Option<postgres::CursorProgress>,
}

enum FormatReader {
    // Boxed: csv_core's parse tables make it several times the others' size.
    Csv(Box<csv::CsvReader>),
    Ndjson(ndjson::NdjsonReader),
    JsonArray(json_array::JsonArrayReader),
    Postgres(Box<postgres::PostgresReader>),
}

/// What a format reader produced next.
enum Step {
    Record(Record),
    Bad(RecordError),
    Fatal(SourceError),
    End,
}

impl Source {
    /// Opens a source named on the command line: `-` is NDJSON on stdin;
    /// anything else is a file whose format is told by its extension
    /// ([`SourceFormat::from_path`]).
    ///
    /// # Errors
    /// The extension is not one of the known ones (see
    /// [`SourceError::hint`]), or as for [`open_as`](Source::open_as).
    pub fn open(arg: &str) -> Result<Source, SourceError> {
        if arg == "-" {
            return Source::from_reader("stdin", SourceFormat::Ndjson, io::stdin());
        }
        let path = Path::new(arg);
        // A missing file is "no such file" whatever its extension: a typo in
        // `customers.cvs` is about the name, not the format.
        check_is_file(path)?;
        match SourceFormat::from_path(path) {
            Some(format) => Source::open_as(path, format),
            None => {
                let reason = match path.extension() {
                    Some(extension) => {
                        format!("unknown extension `.{}`", extension.to_string_lossy())
                    }
                    None => "it has no extension".to_owned(),
                };
                Err(SourceError::unknown_format(&Arc::from(arg), reason))
            }
        }
    }

    /// Opens the file at `path` as `format`, whatever its extension.
    ///
    /// # Errors
    /// The file cannot be opened or read, a CSV header is missing or has an
    /// empty or duplicate column name, or a JSON array file does not start
    /// with `[`.
    pub fn open_as(path: &Path, format: SourceFormat) -> Result<Source, SourceError> {
        let name: Arc<str> = path.to_string_lossy().into();
        check_is_file(path)?;
        let file = File::open(path).map_err(|err| SourceError::open(&name, err, None))?;
        // The size is only for an ETA: a file whose size cannot be read is
        // still readable.
        let regular = file.metadata().ok().filter(|meta| meta.is_file());
        let total_bytes = regular.as_ref().map(|meta| meta.len());
        let mut source = Source::build(name, format, Box::new(file), total_bytes)?;
        // Only a regular file can be read again: a named pipe or a device
        // is a stream, like stdin (opening a pipe twice would wait for a
        // second writer, or split one writer's bytes between two readers).
        source.path = regular.map(|_| path.to_path_buf());
        Ok(source)
    }

    /// The same file opened again from its start, for a second pass (the
    /// `last` duplicate policy reads a file once to find repeated
    /// identities); `None` for stdin, readers and files that are not regular
    /// (a named pipe), which cannot be read twice.
    pub fn reopen(&self) -> Option<Result<Source, SourceError>> {
        // A table read twice would be two snapshots: it is read once.
        let path = self.path.as_deref()?;
        Some(Source::open_as(path, self.format).map(|mut source| {
            source.name = Arc::clone(&self.name);
            source
        }))
    }

    /// As [`reopen`](Self::reopen), for a pass that must read the file once
    /// more: a stream, which cannot, is an error.
    pub(crate) fn reopen_file(&self) -> Result<Source, SourceError> {
        self.reopen().unwrap_or_else(|| {
            let cannot =
                io::Error::new(io::ErrorKind::Unsupported, "a stream cannot be read twice");
            Err(SourceError::open(&self.name, cannot, None))
        })
    }

    /// Reads `format` from any reader, for stdin and tests; `name` appears in
    /// every [`Location`](crate::Location) and error.
    ///
    /// # Errors
    /// As for [`open_as`](Source::open_as), except that there is no file to open.
    pub fn from_reader(
        name: &str,
        format: SourceFormat,
        reader: impl Read + Send + 'static,
    ) -> Result<Source, SourceError> {
        Source::build(name.into(), format, Box::new(reader), None)
    }

    fn build(
        name: Arc<str>,
        format: SourceFormat,
        reader: Box<dyn Read + Send>,
        total_bytes: Option<u64>,
    ) -> Result<Source, SourceError> {
        let progress = ReadProgress::default();
        let input =
            BufReader::with_capacity(BUFFER_BYTES, CountingReader::new(reader, progress.clone()));
        let reader = match format {
            SourceFormat::Csv => {
                FormatReader::Csv(Box::new(csv::CsvReader::new(Arc::clone(&name), input)?))
            }
            SourceFormat::Ndjson => {
                FormatReader::Ndjson(ndjson::NdjsonReader::new(Arc::clone(&name), input))
            }
            SourceFormat::JsonArray => {
                FormatReader::JsonArray(json_array::JsonArrayReader::new(Arc::clone(&name), input)?)
            }
            SourceFormat::Postgres => {
                return Err(SourceError::unknown_format(
                    &name,
                    "a PostgreSQL source is opened with PostgresSource::connect".to_owned(),
                ));
            }
        };
        Ok(Source {
            name,
            format,
            total_bytes,
            expected_records: None,
            progress,
            reader,
            fatal: None,
            finished: false,
            ahead: VecDeque::new(),
            path: None,
            cursor: None,
        })
    }

    fn from_postgres(
        name: Arc<str>,
        reader: postgres::PostgresReader,
        cursor: Option<postgres::CursorProgress>,
        expected_records: Option<u64>,
    ) -> Source {
        Source {
            name,
            format: SourceFormat::Postgres,
            total_bytes: None,
            expected_records,
            progress: ReadProgress::default(),
            reader: FormatReader::Postgres(Box::new(reader)),
            fatal: None,
            finished: false,
            ahead: VecDeque::new(),
            path: None,
            cursor,
        }
    }

    /// In keyset mode (`--cursor`), the last row read; `None` otherwise.
    /// Such a source reads only rows changed since the mark, so rows it
    /// does not read are not gone.
    pub fn cursor(&self) -> Option<&postgres::CursorProgress> {
        self.cursor.as_ref()
    }

    /// The name as given: the path passed to [`open`](Source::open), or
    /// `stdin`. Every record's [`Location::source`](crate::Location::source)
    /// shares this string.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The format being read.
    pub fn format(&self) -> SourceFormat {
        self.format
    }

    /// The CSV header's column names, trimmed, or a PostgreSQL source's
    /// columns; `None` for JSON formats.
    pub fn columns(&self) -> Option<&[Arc<str>]> {
        match &self.reader {
            FormatReader::Csv(reader) => Some(reader.columns()),
            FormatReader::Postgres(reader) => Some(reader.columns()),
            FormatReader::Ndjson(_) | FormatReader::JsonArray(_) => None,
        }
    }

    /// A column whose value no two records of this read share, even once
    /// trimmed as an identity is: a PostgreSQL table's one-column primary
    /// key, checked in the snapshot it is read in (a text key must not
    /// start or end with whitespace or a character outside ASCII). A sync
    /// keyed on it alone cannot meet an identity twice, so it keeps no
    /// table of the identities it has seen. `None` for files, queries and
    /// other keys.
    ///
    /// # Example
    /// ```
    /// use customer_sync::Source;
    /// use customer_sync::source::SourceFormat;
    ///
    /// let csv = "id,email\n1,a@example.com\n".as_bytes();
    /// let source = Source::from_reader("customers.csv", SourceFormat::Csv, csv)?;
    /// assert_eq!(source.distinct_column(), None);
    /// # Ok::<(), customer_sync::source::SourceError>(())
    /// ```
    pub fn distinct_column(&self) -> Option<&str> {
        match &self.reader {
            FormatReader::Postgres(reader) => reader.distinct_column(),
            _ => None,
        }
    }

    /// The file's size in bytes, for an ETA; `None` for stdin and readers.
    pub fn total_bytes(&self) -> Option<u64> {
        self.total_bytes
    }

    /// How many records a source without a byte count expects to read, when
    /// there is an honest estimate: a PostgreSQL table's row count as its
    /// planner estimates it ([`PostgresSource::estimated_rows`](postgres::PostgresSource::estimated_rows)).
    /// Only an estimate (sizes the duplicate table up front); `None` for
    /// files (see [`total_bytes`](Source::total_bytes)), stdin and readers.
    pub fn expected_records(&self) -> Option<u64> {
        self.expected_records
    }

    /// A handle that reports the bytes read so far, from any thread.
    pub fn progress(&self) -> ReadProgress {
        self.progress.clone()
    }

    /// The next item without consuming it: `next` returns it again. Lets a
    /// caller see the first JSON record's keys before the run starts.
    pub fn peek(&mut self) -> Option<&Result<Record, RecordError>> {
        if self.ahead.is_empty() {
            let next = self.read_next()?;
            self.ahead.push_back(next);
        }
        self.ahead.front()
    }

    /// Reads ahead up to `records` items, stopping early at the end of the
    /// input or once `bytes` more bytes have been read, without consuming
    /// them: iteration still yields every one. Returns the well-formed
    /// records among them, for a mapping to infer column types from.
    ///
    /// Memory stays bounded by `bytes` (plus one record).
    pub fn sample(&mut self, records: usize, bytes: u64) -> Vec<&Record> {
        let start = self.progress.bytes_read();
        while self.ahead.len() < records && self.progress.bytes_read().saturating_sub(start) < bytes
        {
            match self.read_next() {
                Some(item) => self.ahead.push_back(item),
                None => break,
            }
        }
        self.ahead
            .iter()
            .filter_map(|item| item.as_ref().ok())
            .collect()
    }

    /// For a first pass over a CSV source's identities: the next row's line
    /// and the text of its fields at `wanted`, without building a record
    /// (see `CsvReader::next_fields`). `None` for other formats, which are
    /// read record by record.
    pub(crate) fn next_csv_fields(
        &mut self,
        wanted: [Option<usize>; 2],
    ) -> Option<Option<(u64, [&str; 2])>> {
        match &mut self.reader {
            FormatReader::Csv(reader) if self.ahead.is_empty() => Some(reader.next_fields(wanted)),
            _ => None,
        }
    }

    /// For a first pass over a JSON file: hands the next object (an NDJSON
    /// line, an array element) to `visit`, unparsed; `None` for other
    /// formats (and after anything was read ahead), `Some(None)` at the
    /// end. What is not an object to parse (a line too long, an empty
    /// element) is skipped; a fatal error ends the objects and is kept for
    /// [`take_fatal`](Self::take_fatal).
    pub(crate) fn next_unparsed<R>(
        &mut self,
        mut visit: impl FnMut(UnparsedObject<'_>) -> R,
    ) -> Option<Option<R>> {
        if !self.ahead.is_empty() {
            return None;
        }
        while !self.finished {
            let step = match &mut self.reader {
                FormatReader::Ndjson(reader) => match reader.next_line(&mut visit) {
                    ndjson::Line::Read(read) => return Some(Some(read)),
                    ndjson::Line::Blank | ndjson::Line::Bad(_) => continue,
                    ndjson::Line::End => Step::End,
                    ndjson::Line::Fatal(error) => Step::Fatal(error),
                },
                FormatReader::JsonArray(reader) => match reader.next_element(&mut visit) {
                    Ok(read) => return Some(Some(read)),
                    Err(step) => step,
                },
                FormatReader::Csv(_) | FormatReader::Postgres(_) => return None,
            };
            match step {
                Step::Record(_) | Step::Bad(_) => {}
                Step::End => self.finished = true,
                Step::Fatal(error) => {
                    self.fatal = Some(error);
                    self.finished = true;
                }
            }
        }
        Some(None)
    }

    /// Takes back a record this source gave, once its reader is done with
    /// it: a file source refills its fields' text for the next record rather
    /// than allocating each anew.
    pub(crate) fn recycle(&mut self, record: Record) {
        match &mut self.reader {
            FormatReader::Csv(reader) => reader.spare = Some(record.fields),
            FormatReader::Ndjson(reader) => reader.keys.spare = Some(record.fields),
            FormatReader::JsonArray(reader) => reader.keys.spare = Some(record.fields),
            FormatReader::Postgres(_) => {}
        }
    }

    /// For a first pass over identities of a JSON source: only the values
    /// of the keys `names` are kept; every other value is still parsed and
    /// checked as before (a record is malformed exactly when it was), but
    /// comes out as `null`, which saves building it. CSV and PostgreSQL
    /// sources are left as they are.
    pub(crate) fn keep_only(&mut self, names: Vec<Box<str>>) {
        match &mut self.reader {
            FormatReader::Ndjson(reader) => reader.keys.only = Some(names),
            FormatReader::JsonArray(reader) => reader.keys.only = Some(names),
            FormatReader::Csv(_) | FormatReader::Postgres(_) => {}
        }
    }

    /// The fatal error that ended iteration early, if one did. Call it once
    /// the iterator returns `None`; it returns the error only once.
    pub fn take_fatal(&mut self) -> Option<SourceError> {
        self.fatal.take()
    }
}

impl Iterator for Source {
    type Item = Result<Record, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.ahead.pop_front() {
            Some(item) => Some(item),
            None => self.read_next(),
        }
    }
}

impl Source {
    /// The next item from the format reader, past anything read ahead.
    fn read_next(&mut self) -> Option<Result<Record, RecordError>> {
        if self.finished {
            return None;
        }
        let step = match &mut self.reader {
            FormatReader::Csv(reader) => reader.next_step(),
            FormatReader::Ndjson(reader) => reader.next_step(),
            FormatReader::JsonArray(reader) => reader.next_step(),
            FormatReader::Postgres(reader) => reader.next_step(),
        };
        match step {
            Step::Record(record) => Some(Ok(record)),
            Step::Bad(error) => Some(Err(error)),
            Step::Fatal(error) => {
                self.fatal = Some(error);
                self.finished = true;
                None
            }
            Step::End => {
                self.finished = true;
                None
            }
        }
    }
}

// After a fatal error or the end, `next` keeps returning `None`.
impl FusedIterator for Source {}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("total_bytes", &self.total_bytes)
            .field("expected_records", &self.expected_records)
            .field("bytes_read", &self.progress.bytes_read())
            .finish_non_exhaustive()
    }
}

/// Fails unless `path` exists and is not a directory; a missing file's
/// error suggests a similarly named file beside it, if there is one.
fn check_is_file(path: &Path) -> Result<(), SourceError> {
    let name: Arc<str> = path.to_string_lossy().into();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(SourceError::directory(&name, directory_hint(path))),
        Ok(_) => Ok(()),
        Err(err) => {
            let hint = (err.kind() == io::ErrorKind::NotFound)
                .then(|| similar_file(path))
                .flatten()
                .map(|similar| format!("did you mean {similar}?"));
            Err(SourceError::open(&name, err, hint))
        }
    }
}

/// How many directory entries a hint looks at, so a huge directory costs
/// nothing noticeable.
const HINT_ENTRIES: usize = 10_000;

/// The file beside `path` whose name is closest to its name (at most two
/// edits apart, ignoring case), as a path to type.
fn similar_file(path: &Path) -> Option<String> {
    let wanted = path.file_name()?.to_str()?.to_lowercase();
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let entries = std::fs::read_dir(parent.unwrap_or(Path::new("."))).ok()?;
    let (distance, found) = entries
        .take(HINT_ENTRIES)
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .map(|candidate| (edit_distance(&wanted, &candidate.to_lowercase()), candidate))
        .min()?;
    (distance <= 2).then(|| match parent {
        Some(parent) => parent.join(found).to_string_lossy().into_owned(),
        None => found,
    })
}

/// Levenshtein distance between two short names, by characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Names the readable files in a directory passed as a source.
fn directory_hint(dir: &Path) -> String {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .take(HINT_ENTRIES)
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| SourceFormat::from_path(Path::new(name)).is_some())
        .collect();
    files.sort();
    match files.as_slice() {
        [] => "pass a .csv, .ndjson, .jsonl or .json file".to_owned(),
        [only] => format!("pass the file itself: {}", dir.join(only).display()),
        [first, rest @ ..] => format!(
            "pass one of its files, e.g. {} ({} more)",
            dir.join(first).display(),
            rest.len()
        ),
    }
}

/// The number of line feeds in `bytes`: lines are counted by `\n`, so `\r\n`
/// files count right and a lone `\r` does not start a line.
fn count_newlines(bytes: &[u8]) -> u64 {
    // memchr counts with vector instructions; a filter-count did not vectorize.
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

/// A JSON test record as (line, object), or an error as (line, message).
#[cfg(test)]
pub(crate) type JsonItem = Result<(u64, serde_json::Value), (u64, String)>;

/// Reads JSON-format test input into (line, object) items or (line, message)
/// errors, plus the fatal error if one ended it; shared by the format tests.
#[cfg(test)]
pub(crate) fn read_json_items(
    name: &str,
    format: SourceFormat,
    data: &[u8],
) -> (Vec<JsonItem>, Option<SourceError>) {
    let mut source = Source::from_reader(name, format, io::Cursor::new(data.to_vec())).unwrap();
    let items = source
        .by_ref()
        .map(|item| match item {
            Ok(record) => {
                let object = record
                    .fields
                    .iter()
                    .map(|f| match &f.value {
                        crate::FieldValue::Json(value) => (f.name.to_string(), value.clone()),
                        crate::FieldValue::Text(text) => panic!("{format:?} gave text {text}"),
                    })
                    .collect();
                Ok((record.location.line, serde_json::Value::Object(object)))
            }
            Err(err) => Err((err.location.line, err.message)),
        })
        .collect();
    (items, source.take_fatal())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn source_is_send_and_static() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<Source>();
        assert_send::<ReadProgress>();
    }

    #[test]
    fn json_sources_refill_a_given_back_record_s_strings() {
        let lines = [
            r#"{"id": "c1", "email": "ada@example.com"}"#,
            r#"{"id": "c2", "email": "bo@example.com"}"#,
        ];
        let inputs = [
            (SourceFormat::Ndjson, lines.join("\n")),
            (SourceFormat::JsonArray, format!("[{}]", lines.join(",\n"))),
        ];
        for (format, text) in inputs {
            let mut source = Source::from_reader("in", format, Cursor::new(text)).unwrap();
            let first = source.next().unwrap().unwrap();
            let email = |record: &Record| match record.get("email") {
                Some(crate::FieldValue::Json(serde_json::Value::String(s))) => {
                    (s.clone(), s.as_ptr())
                }
                other => panic!("{format}: email is {other:?}"),
            };
            let (_, kept) = email(&first);
            source.recycle(first);
            let second = source.next().unwrap().unwrap();
            assert_eq!(
                email(&second),
                (String::from("bo@example.com"), kept),
                "{format}"
            );
        }
    }

    #[test]
    fn format_from_path_ignores_case_and_knows_four_extensions() {
        let cases = [
            ("a.csv", Some(SourceFormat::Csv)),
            ("A.CSV", Some(SourceFormat::Csv)),
            ("a.ndjson", Some(SourceFormat::Ndjson)),
            ("a.JsonL", Some(SourceFormat::Ndjson)),
            ("dir.v2/a.json", Some(SourceFormat::JsonArray)),
            ("a.txt", None),
            ("json", None),
            ("a.csv.gz", None),
        ];
        for (path, format) in cases {
            assert_eq!(SourceFormat::from_path(Path::new(path)), format, "{path}");
        }
        assert_eq!(SourceFormat::JsonArray.as_str(), "json");
        assert_eq!(SourceFormat::Ndjson.to_string(), "ndjson");
    }

    #[test]
    fn open_refuses_unknown_extensions_of_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("customers.txt");
        std::fs::write(&txt, "id\n1\n").unwrap();
        let err = Source::open(txt.to_str().unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("customers.txt: unknown extension `.txt`"),
            "{err}"
        );
        assert!(err.hint().is_some_and(|hint| hint.contains("--format")));

        let makefile = dir.path().join("Makefile");
        std::fs::write(&makefile, "all:\n").unwrap();
        let err = Source::open(makefile.to_str().unwrap()).unwrap_err();
        assert!(err.to_string().ends_with("it has no extension"), "{err}");
    }

    #[test]
    fn a_missing_file_is_no_such_file_whatever_its_extension() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("customers.csv"), "id\n1\n").unwrap();
        let typo = dir.path().join("customers.cvs");
        let err = Source::open(typo.to_str().unwrap()).unwrap_err();
        assert!(err.is_io(), "{err}");
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(!err.to_string().contains(&cause), "said once: {err}");
        let expected = dir.path().join("customers.csv");
        assert_eq!(
            err.hint(),
            Some(format!("did you mean {}?", expected.display()).as_str())
        );
        // Nothing close: no hint.
        let err = Source::open(dir.path().join("orders.json").to_str().unwrap()).unwrap_err();
        assert_eq!(err.hint(), None);
    }

    #[test]
    fn a_directory_is_named_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("exports.csv");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("a.csv"), "id\n1\n").unwrap();
        let err = Source::open(sub.to_str().unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("exports.csv is a directory, not a file"),
            "{err}"
        );
        assert!(err.hint().is_some_and(|h| h.contains("a.csv")), "{err:?}");
        let err = Source::open_as(&sub, SourceFormat::Csv).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("customers.cvs", "customers.csv"), 2);
        assert_eq!(edit_distance("a.csv", "a.csv"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn iteration_is_fused_after_a_fatal_error() {
        let mut source = Source::from_reader(
            "t.json",
            SourceFormat::JsonArray,
            Cursor::new("[{\"a\":1},"),
        )
        .unwrap();
        assert!(source.next().unwrap().is_ok());
        assert!(source.next().is_none());
        let fatal = source.take_fatal().unwrap();
        assert_eq!(fatal.line(), Some(1));
        assert!(source.next().is_none());
        assert!(source.take_fatal().is_none());
    }

    #[test]
    fn a_sample_reads_ahead_without_consuming() {
        let data = "id,n\n1,a\n2\n3,c\n4,d\n";
        let mut source =
            Source::from_reader("t.csv", SourceFormat::Csv, Cursor::new(data)).unwrap();
        let sample: Vec<u64> = source
            .sample(3, 1 << 20)
            .iter()
            .map(|r| r.location.line)
            .collect();
        assert_eq!(sample, [2, 4], "the malformed line 3 is not sampled");
        assert!(source.peek().is_some_and(Result::is_ok));
        let lines: Vec<Result<u64, u64>> = source
            .by_ref()
            .map(|item| item.map(|r| r.location.line).map_err(|e| e.location.line))
            .collect();
        assert_eq!(lines, [Ok(2), Err(3), Ok(4), Ok(5)]);
        assert!(source.take_fatal().is_none());

        let mut short = Source::from_reader("t.csv", SourceFormat::Csv, Cursor::new(data)).unwrap();
        assert_eq!(short.sample(100, 1 << 20).len(), 3, "the end stops it");
        assert_eq!(short.count(), 4);
    }

    #[test]
    fn progress_counts_bytes_consumed() {
        let data = "{\"a\":1}\n".repeat(10_000);
        let mut source =
            Source::from_reader("t.ndjson", SourceFormat::Ndjson, Cursor::new(data.clone()))
                .unwrap();
        let progress = source.progress();
        assert_eq!(source.total_bytes(), None);
        assert_eq!(source.by_ref().count(), 10_000);
        assert_eq!(progress.bytes_read(), data.len() as u64);
    }

    fn check_never_panics(format: SourceFormat, bytes: Vec<u8>) -> Result<(), TestCaseError> {
        let Ok(mut source) = Source::from_reader("p", format, Cursor::new(bytes)) else {
            return Ok(());
        };
        for item in &mut source {
            match item {
                Ok(record) => prop_assert!(record.location.line >= 1),
                Err(error) => prop_assert!(error.location.line >= 1),
            }
        }
        if let Some(fatal) = source.take_fatal() {
            prop_assert!(fatal.line().is_some_and(|line| line >= 1));
        }
        Ok(())
    }

    /// Bytes that look a little like the formats, so that the property
    /// reaches past the first syntax error.
    fn bytes_like(alphabet: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            prop::collection::vec(prop::sample::select(alphabet), 0..200),
        ]
    }

    proptest! {
        #[test]
        fn csv_never_panics(bytes in bytes_like(b"a,\"\n\r \xef\xbb\xbf\xff")) {
            check_never_panics(SourceFormat::Csv, bytes)?;
        }

        #[test]
        fn ndjson_never_panics(bytes in bytes_like(b"{}[]\":,a1 \n\r\\\xff")) {
            check_never_panics(SourceFormat::Ndjson, bytes)?;
        }

        #[test]
        fn json_array_never_panics(bytes in bytes_like(b"{}[]\":,a1 \n\r\\\xff")) {
            check_never_panics(SourceFormat::JsonArray, bytes)?;
        }
    }
}
