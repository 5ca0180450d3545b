//! Sources read from real files: formats, line numbers, errors and progress.

use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};

use customer_sync::source::{Source, SourceFormat};
use customer_sync::{FieldValue, Record, RecordError, RecordErrorKind};
use serde_json::json;
use tempfile::TempDir;

fn write(dir: &TempDir, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn open(path: &Path) -> Source {
    Source::open(path.to_str().unwrap()).unwrap()
}

/// Reads everything, asserting that the source was read to its end.
fn read_all(source: &mut Source) -> Vec<Result<Record, RecordError>> {
    let items = source.by_ref().collect();
    if let Some(fatal) = source.take_fatal() {
        panic!("unexpected fatal error: {fatal}");
    }
    items
}

fn text(record: &Record, name: &str) -> String {
    match record.get(name) {
        Some(FieldValue::Text(text)) => text.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

fn json_of(record: &Record, name: &str) -> serde_json::Value {
    match record.get(name) {
        Some(FieldValue::Json(value)) => value.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn csv_header_bom_is_stripped() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "customers.csv", "\u{feff}id,email\n1,a@example.com\n");
    let mut source = open(&path);
    let columns: Vec<&str> = source.columns().unwrap().iter().map(|c| &**c).collect();
    assert_eq!(columns, ["id", "email"]);
    let records = read_all(&mut source);
    let record = records[0].as_ref().unwrap();
    assert_eq!(text(record, "id"), "1");
    assert_eq!(record.fields[0].name.as_ref(), "id");
}

#[test]
fn csv_quoted_multiline_field_keeps_later_line_numbers() {
    let dir = TempDir::new().unwrap();
    let data = "id,note,email\n\
                1,\"line one\nline two, with comma\nand \"\"quotes\"\"\",a@x.io\n\
                2,plain,b@x.io\n\
                \n\
                3,\"\",c@x.io\n";
    let path = write(&dir, "notes.csv", data);
    let mut source = open(&path);
    let records: Vec<Record> = read_all(&mut source)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let lines: Vec<u64> = records.iter().map(|r| r.location.line).collect();
    assert_eq!(lines, [2, 5, 7]);
    assert_eq!(
        text(&records[0], "note"),
        "line one\nline two, with comma\nand \"quotes\""
    );
    assert_eq!(text(&records[2], "note"), "", "empty values are kept");
    assert_eq!(
        records[1].location.to_string(),
        format!("{}:5", path.display())
    );
}

#[test]
fn csv_ragged_row_names_its_line_and_reading_continues() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "c.csv", "a,b,c,d,e\n1,2,3,4,5\n1,2,3\n6,7,8,9,10\n");
    let mut source = open(&path);
    let items = read_all(&mut source);
    assert_eq!(items.len(), 3);
    let err = items[1].as_ref().unwrap_err();
    assert_eq!(err.kind, RecordErrorKind::Malformed);
    assert_eq!(err.location.line, 3);
    assert_eq!(err.message, "row has 3 fields but the header has 5");
    assert!(
        err.to_string()
            .starts_with(&format!("{}:3: ", path.display()))
    );
    assert_eq!(text(items[2].as_ref().unwrap(), "e"), "10");
}

#[test]
fn csv_bad_header_is_fatal_with_a_hint() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "dup.csv", "id,email,Email,email\n1,a,b,c\n");
    let err = Source::open(path.to_str().unwrap()).unwrap_err();
    assert!(
        err.to_string()
            .contains("the header names column `email` twice"),
        "{err}"
    );
    assert!(err.to_string().starts_with(&*path.to_string_lossy()));
    assert!(err.hint().is_some());

    let path = write(&dir, "empty.csv", "");
    let err = Source::open(path.to_str().unwrap()).unwrap_err();
    assert!(err.to_string().contains("the file is empty"), "{err}");
}

#[test]
fn ndjson_bad_line_is_reported_and_reading_continues() {
    let dir = TempDir::new().unwrap();
    let path = write(
        &dir,
        "events.jsonl",
        "{\"id\": 1, \"plan\": {\"tier\": \"pro\"}}\n{\"id\": 2,\n\n{\"id\": 3}\n",
    );
    let mut source = open(&path);
    assert_eq!(source.format(), SourceFormat::Ndjson);
    assert!(source.columns().is_none());
    let items = read_all(&mut source);
    assert_eq!(items.len(), 3);
    assert_eq!(
        json_of(items[0].as_ref().unwrap(), "plan"),
        json!({"tier": "pro"})
    );
    let err = items[1].as_ref().unwrap_err();
    assert_eq!(
        (err.kind, err.location.line),
        (RecordErrorKind::Malformed, 2)
    );
    assert!(err.message.contains("column"), "{}", err.message);
    let last = items[2].as_ref().unwrap();
    assert_eq!((last.location.line, json_of(last, "id")), (4, json!(3)));
}

#[test]
fn json_array_streams_elements_and_reports_a_bad_one() {
    let dir = TempDir::new().unwrap();
    let mut data = String::from("[\n");
    for id in 0..5000 {
        data.push_str(&format!("  {{\"id\": {id}, \"email\": \"u{id}@x.io\"}},\n"));
    }
    data.push_str("  {\"id\": \"broken\" \"email\": 1},\n  {\"id\": 5001}\n]\n");
    let path = write(&dir, "all.json", &data);
    let mut source = open(&path);
    assert_eq!(source.format(), SourceFormat::JsonArray);
    let items = read_all(&mut source);
    assert_eq!(items.len(), 5002);
    assert_eq!(items[4999].as_ref().unwrap().location.line, 5001);
    let err = items[5000].as_ref().unwrap_err();
    assert_eq!(
        (err.kind, err.location.line),
        (RecordErrorKind::Malformed, 5002)
    );
    assert!(err.message.contains("line 5002 column"), "{}", err.message);
    let last = items[5001].as_ref().unwrap();
    assert_eq!(
        (last.location.line, json_of(last, "id")),
        (5003, json!(5001))
    );
}

#[test]
fn json_file_that_is_not_an_array_is_fatal() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "one.json", "{\"id\": 1}\n");
    let err = Source::open(path.to_str().unwrap()).unwrap_err();
    assert!(err.to_string().contains("expected a JSON array"), "{err}");
    assert!(err.hint().unwrap().contains("ndjson"));
}

#[test]
fn unknown_extension_is_refused_with_a_hint() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "customers.txt", "id\n1\n");
    let arg = path.to_str().unwrap();
    let err = Source::open(arg).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot tell the format of {arg}: unknown extension `.txt`")
    );
    assert_eq!(
        err.hint(),
        Some("use a .csv, .ndjson, .jsonl or .json file, or --format")
    );

    // With an explicit format the extension does not matter.
    let mut source = Source::open_as(&path, SourceFormat::Csv).unwrap();
    assert_eq!(read_all(&mut source).len(), 1);
}

#[test]
fn missing_file_is_an_open_error() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("customers.csv");
    let err = Source::open(path.to_str().unwrap()).unwrap_err();
    // The cause is the source, never repeated in the message.
    assert_eq!(err.to_string(), format!("cannot open {}", path.display()));
    assert!(err.is_io());
    let cause = std::error::Error::source(&err).unwrap();
    let io = cause.downcast_ref::<io::Error>().unwrap();
    assert_eq!(io.kind(), io::ErrorKind::NotFound);
}

#[test]
fn stdin_like_reader_is_ndjson_named_as_given() {
    let input = Cursor::new(b"{\"id\": 1}\n{\"id\": 2}\n".to_vec());
    let mut source = Source::from_reader("stdin", SourceFormat::Ndjson, input).unwrap();
    assert_eq!(source.name(), "stdin");
    assert_eq!(source.total_bytes(), None);
    let records: Vec<Record> = read_all(&mut source)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(records[1].location.to_string(), "stdin:2");
}

#[test]
fn total_bytes_and_progress_reach_the_file_size() {
    let dir = TempDir::new().unwrap();
    let rows = 20_000;
    let csv: String = std::iter::once("id,email\n".to_owned())
        .chain((0..rows).map(|i| format!("{i},user{i}@example.com\n")))
        .collect();
    let ndjson: String = (0..rows).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    let array = format!(
        "[{}]",
        (0..rows)
            .map(|i| format!("{{\"id\":{i}}}"))
            .collect::<Vec<_>>()
            .join(",\n")
    );
    for (name, data) in [("p.csv", csv), ("p.ndjson", ndjson), ("p.json", array)] {
        let path = write(&dir, name, &data);
        let mut source = open(&path);
        let size = data.len() as u64;
        assert_eq!(source.total_bytes(), Some(size), "{name}");
        let progress = source.progress();
        assert!(
            progress.bytes_read() < size,
            "{name}: streamed, not read whole"
        );
        // The engine iterates on one thread while a progress bar polls another.
        let reader = std::thread::spawn(move || read_all(&mut source).len());
        assert_eq!(reader.join().unwrap(), rows, "{name}");
        assert_eq!(progress.bytes_read(), size, "{name}");
    }
}

/// A reader that fails after `ok` bytes, like a disk or pipe error mid-file.
struct FailingReader {
    data: Cursor<Vec<u8>>,
    ok: u64,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.data.position() >= self.ok {
            return Err(io::Error::other("device went away"));
        }
        let room = (self.ok - self.data.position()).min(buf.len() as u64) as usize;
        self.data.read(&mut buf[..room])
    }
}

#[test]
fn an_io_error_mid_file_ends_iteration_as_a_fatal_error() {
    let data: String = std::iter::once("id\n".to_owned())
        .chain((0..100_000).map(|i| format!("{i}\n")))
        .collect();
    for format in [SourceFormat::Csv, SourceFormat::Ndjson] {
        let reader = FailingReader {
            data: Cursor::new(data.clone().into_bytes()),
            ok: 200_000,
        };
        let mut source = Source::from_reader("flaky", format, reader).unwrap();
        let yielded = source.by_ref().count();
        assert!(yielded > 0, "{format}");
        let fatal = source.take_fatal().expect("the I/O error is reported");
        assert!(fatal.is_io(), "{format}");
        assert!(
            fatal.to_string().starts_with("cannot read flaky at line "),
            "{fatal}"
        );
        let cause = std::error::Error::source(&fatal).expect("the I/O error is the source");
        assert_eq!(cause.to_string(), "device went away");
        assert!(!fatal.to_string().contains("device went away"), "{fatal}");
        assert!(source.next().is_none());
    }
}
