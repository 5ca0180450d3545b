//! End-to-end: what a data engineer meets in the first hour with the real
//! binary: messages that name what was typed, file errors, inline problems,
//! inferred types, and pipes that close early.

mod common;

use common::*;
use segment_receiver::FaultPlan;
use tempfile::TempDir;

/// The `hint:` line of a run's stderr.
fn hint(err: &str) -> &str {
    err.lines()
        .find_map(|line| line.strip_prefix("hint: "))
        .unwrap_or_else(|| panic!("no hint line in: {err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tuning_flag_names_itself_and_its_range() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(3));
    let cases: &[(&str, &str, &str)] = &[
        ("--batch-size", "5000", "1 to 2500"),
        ("--batch-size", "0", "1 to 2500"),
        ("--concurrency", "0", "1 to 64"),
        ("--concurrency", "500", "1 to 64"),
        ("--max-attempts", "0", "at least 1"),
        ("--rate", "0", "greater than 0"),
        ("--rate", "NaN", "greater than 0"),
        ("--rate", "-1", "greater than 0"),
        ("--backoff-ms", "0", "1 to 60000"),
        ("--flush-timeout", "0", "at least 1"),
    ];
    for (flag, value, range) in cases {
        let output = run(
            &dir,
            None,
            &[
                "sync",
                path_str(&file),
                "--dry-run",
                "--no-state",
                flag,
                value,
            ],
        )
        .await;
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains(flag) && first.contains(range),
            "{flag} {value}: {err}"
        );
        assert!(first.contains(value), "the value seen: {err}");
        let hint = hint(&err);
        assert!(!hint.contains("SEGMENT_HOST"), "{flag} {value}: {err}");
        assert!(hint.contains(flag), "{flag} {value}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_region_flag_blames_the_flag() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(3));
    let output = command(&dir, None, &["sync", path_str(&file), "--region", "moon"])
        .env("SEGMENT_WRITE_KEY", KEY)
        .output()
        .await
        .unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: --region must be `us` or `eu`, not `moon`"),
        "{err}"
    );
    assert!(!err.contains("SEGMENT_REGION"), "{err}");
    assert!(hint(&err).contains("--region"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_region_in_the_environment_do_not_stop_a_dry_run() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(3));
    let output = command(&dir, None, &["sync", path_str(&file), "--dry-run"])
        .env("SEGMENT_HOST", "http://127.0.0.1:9")
        .env("SEGMENT_REGION", "eu")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_flag_beats_host_and_region_in_the_environment() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(3));
    let output = command(
        &dir,
        None,
        &["sync", path_str(&file), "--host", &receiver.url()],
    )
    .env("SEGMENT_WRITE_KEY", KEY)
    .env("SEGMENT_HOST", "http://127.0.0.1:9")
    .env("SEGMENT_REGION", "eu")
    .output()
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(receiver.store().stats().accepted, 3);

    // Without a flag, the environment contradicts itself: stop, and say how to decide.
    let output = command(&dir, None, &["sync", path_str(&file)])
        .env("SEGMENT_WRITE_KEY", KEY)
        .env("SEGMENT_HOST", receiver.url())
        .env("SEGMENT_REGION", "eu")
        .output()
        .await
        .unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("SEGMENT_HOST") && err.contains("SEGMENT_REGION"),
        "{err}"
    );
    assert!(hint(&err).contains("--host"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_host_flag_blames_the_flag() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(3));
    let output = command(&dir, None, &["sync", path_str(&file), "--host", "ftp://x"])
        .env("SEGMENT_WRITE_KEY", KEY)
        .output()
        .await
        .unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: --host "), "{err}");
    assert!(!err.contains("SEGMENT_HOST"), "{err}");
}

/// A pipe whose reading end is already closed, as after `| head` exits.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stderr_does_not_change_the_exit_code() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(20));
    let status = command(&dir, Some(&receiver), &["sync", path_str(&file)])
        .stderr(closed_pipe())
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(receiver.store().stats().accepted, 20);

    // A run with an invalid row exits 1, closed stderr or not.
    let file = write(&dir, "bad.csv", "user_id,age\nu1,31\nu2,old\n");
    let status = command(&dir, Some(&receiver), &["sync", path_str(&file)])
        .stderr(closed_pipe())
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_is_not_an_error() {
    // `segment-sync demo 2>&1 | head`: both streams go to a reader that left.
    let dir = TempDir::new().unwrap();
    let pipe = closed_pipe();
    let status = command(&dir, None, &["demo"])
        .stdout(pipe.try_clone().unwrap())
        .stderr(pipe)
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let file = write(&dir, "c.csv", &numbered_customers(20));
    let pipe = closed_pipe();
    let status = command(&dir, None, &["preview", path_str(&file), "-n", "20"])
        .stdout(pipe.try_clone().unwrap())
        .stderr(pipe)
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Whether any line of `err` after the first repeats text an earlier line already said.
fn repeats_a_cause(err: &str) -> bool {
    let lines: Vec<&str> = err.lines().collect();
    lines.iter().enumerate().skip(1).any(|(i, line)| {
        let said = line.trim().trim_start_matches("caused by: ");
        !said.is_empty() && lines[..i].iter().any(|earlier| earlier.contains(said))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_file_says_so_once() {
    let dir = TempDir::new().unwrap();
    let output = run(&dir, None, &["sync", "nosuch.csv", "--dry-run"]).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("nosuch.csv"), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert!(!repeats_a_cause(&err), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_says_it_is_a_directory() {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir(dir.path().join("dir.csv")).unwrap();
    let output = run(&dir, None, &["sync", "dir.csv", "--dry-run"]).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: dir.csv is a directory"), "{err}");
    assert!(!err.contains("line 1"), "{err}");
    assert!(!repeats_a_cause(&err), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_file_name_is_no_such_file_with_a_suggestion() {
    let dir = TempDir::new().unwrap();
    write(&dir, "customers.csv", &numbered_customers(3));
    let output = run(&dir, None, &["sync", "customers.cvs", "--dry-run"]).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("No such file"), "{err}");
    assert!(!err.contains("extension"), "{err}");
    assert!(hint(&err).contains("customers.csv"), "{err}");

    // An existing file with an unknown extension is still about the extension.
    write(&dir, "customers.txt", &numbered_customers(3));
    let output = run(&dir, None, &["sync", "customers.txt", "--dry-run"]).await;
    let err = stderr(&output);
    assert!(err.contains("unknown extension `.txt`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_an_identity_make_the_record_invalid() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(
        &dir,
        "c.csv",
        "user_id,anonymous_id,email\nu1,,a@x.io\nu\u{0}2,,b@x.io\n,anon\u{7}3,c@x.io\nu4,,d@x.io\n",
    );
    let report = dir.path().join("report.jsonl");
    let output = run(
        &dir,
        Some(&receiver),
        &["sync", path_str(&file), "--report", path_str(&report)],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(receiver.store().stats().accepted, 2);
    let lines = report_lines(&report);
    let invalid: Vec<_> = lines.iter().filter(|l| l["type"] == "invalid").collect();
    assert_eq!(invalid.len(), 2, "{lines:?}");
    assert_eq!(invalid[0]["line"], 3);
    assert_eq!(invalid[0]["field"], "user_id");
    assert_eq!(invalid[0]["reason"], "invalid_value");
    assert!(
        invalid[0]["message"].as_str().unwrap().contains("U+0000"),
        "{invalid:?}"
    );
    assert_eq!(invalid[1]["line"], 4);
    assert_eq!(invalid[1]["field"], "anonymous_id");

    // The same in a stateless run and from NDJSON.
    let file = write(
        &dir,
        "c.ndjson",
        "{\"userId\":\"n\\u00001\"}\n{\"userId\":\"n2\"}\n",
    );
    let output = run(
        &dir,
        Some(&receiver),
        &["sync", path_str(&file), "--no-state"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(receiver.store().events_for_user("n2").len(), 1);
    assert_eq!(receiver.store().stats().accepted, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_sends_booleans_and_numbers() {
    let dir = TempDir::new().unwrap();
    let output = run(&dir, None, &["demo", "--show", "1"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let start = stdout.find('{').expect("an event is shown");
    let event: serde_json::Value = serde_json::Deserializer::from_str(&stdout[start..])
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(event["traits"]["newsletter"], false, "{event}");
    assert_eq!(event["traits"]["lifetime_value"], 0.0, "{event}");
    assert!(event["traits"]["lifetime_value"].is_f64(), "{event}");
    // Reserved string traits stay strings, even when they look like numbers.
    assert!(err.contains("boolean (inferred)"), "{err}");
}

const TYPED: &str = "\
user_id,active,seats,mrr,ratio,renewed,code,mixed,zip,note
u1,true,12,0.00,1,2024-05-01,01234,1,22201,
u2,FALSE,-3,137.50,2.5,2024-05-02T10:00:00Z,11111,abc,01234,x
u3,,0,,,2024-05-03 10:00:00,22222,2,,
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_types_are_inferred_conservatively() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "typed.csv", TYPED);
    let output = run(&dir, Some(&receiver), &["sync", path_str(&file)]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let u1 = &receiver.store().events_for_user("u1")[0]["traits"];
    let u2 = &receiver.store().events_for_user("u2")[0]["traits"];
    assert_eq!(u1["active"], true);
    assert_eq!(u2["active"], false);
    assert_eq!(u1["seats"], 12);
    assert_eq!(u2["seats"], -3);
    assert_eq!(u1["mrr"], 0.0);
    assert_eq!(u2["mrr"], 137.5);
    assert_eq!(u1["ratio"], 1.0, "integers and decimals mixed are decimals");
    assert_eq!(u1["renewed"], "2024-05-01T00:00:00Z");
    assert_eq!(u2["renewed"], "2024-05-02T10:00:00Z");
    assert_eq!(u1["code"], "01234", "a leading zero keeps a string");
    assert_eq!(
        u2["code"], "11111",
        "one leading zero keeps the whole column a string"
    );
    assert_eq!(u1["mixed"], "1", "a mix stays a string");
    assert_eq!(
        u1["address"]["postalCode"], "22201",
        "a reserved string trait"
    );
    assert_eq!(u2["note"], "x");

    let output = run(&dir, None, &["mapping", "--print", path_str(&file)]).await;
    let text = String::from_utf8(output.stdout).unwrap();
    for (column, ty) in [
        ("active", "boolean"),
        ("seats", "integer"),
        ("mrr", "float"),
        ("renewed", "timestamp"),
    ] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("`{column}`")))
            .unwrap_or_else(|| panic!("{column}: {text}"));
        assert!(line.contains(&format!("{ty} (inferred)")), "{line}");
    }
    let code = text.lines().find(|l| l.contains("`code`")).unwrap();
    assert!(!code.contains("inferred"), "{code}");

    // The mapping file form pins the inferred types, and reads back the same.
    let output = run(&dir, None, &["mapping", "--toml", path_str(&file)]).await;
    let toml = String::from_utf8(output.stdout).unwrap();
    assert!(
        toml.contains("active") && toml.contains("type = \"boolean\""),
        "{toml}"
    );
    assert!(toml.contains("type = \"float\""), "{toml}");
    let mapping = write(&dir, "pinned.toml", &toml);
    let output = run(
        &dir,
        None,
        &[
            "preview",
            path_str(&file),
            "--mapping",
            path_str(&mapping),
            "-n",
            "1",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let event: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(event["traits"]["seats"], 12, "{event}");
    assert_eq!(event["traits"]["code"], "01234", "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_past_the_sample_that_contradicts_an_inferred_type_is_invalid() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let mut csv = String::from("user_id,seats\n");
    for i in 0..1_100 {
        csv.push_str(&format!("u{i},{}\n", i % 50));
    }
    csv.push_str("late1,n/a\nlate2,007\nlate3,7\n");
    let file = write(&dir, "seats.csv", &csv);
    let report = dir.path().join("report.jsonl");
    let output = run(
        &dir,
        Some(&receiver),
        &["sync", path_str(&file), "--report", path_str(&report)],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let invalid: Vec<_> = report_lines(&report)
        .into_iter()
        .filter(|l| l["type"] == "invalid")
        .collect();
    assert_eq!(invalid.len(), 2, "{invalid:?}");
    assert_eq!(invalid[0]["line"], 1_102);
    assert_eq!(invalid[0]["field"], "seats");
    let message = invalid[0]["message"].as_str().unwrap();
    assert!(message.contains("inferred"), "{message}");
    assert_eq!(
        invalid[1]["line"], 1_103,
        "a leading zero is not an integer here either"
    );
    assert_eq!(
        receiver.store().events_for_user("late3")[0]["traits"]["seats"],
        7
    );
    assert_eq!(receiver.store().stats().accepted, 1_101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_inferred_type_resends_exactly_the_records_it_changes() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let sent = |user: &str| receiver.store().events_for_user(user).len();
    let first = "user_id,code,plan\nu1,1,pro\nu2,2,free\nu3,,free\n";
    let file = write(&dir, "c.csv", first);
    let output = run(&dir, Some(&receiver), &["sync", path_str(&file)]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        receiver.store().events_for_user("u1")[0]["traits"]["code"],
        1
    );

    // A new row with a textual code makes the column a string: u1 and u2
    // change (1 -> "1"), u3 has no code and does not.
    write(&dir, "c.csv", &format!("{first}u4,A4,pro\n"));
    let output = run(&dir, Some(&receiver), &["sync", path_str(&file)]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        (sent("u1"), sent("u2"), sent("u3"), sent("u4")),
        (2, 2, 1, 1)
    );
    assert_eq!(
        receiver.store().events_for_user("u1")[1]["traits"]["code"],
        "1"
    );

    // Nothing changed since: nothing is sent.
    let output = run(&dir, Some(&receiver), &["sync", path_str(&file)]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(receiver.store().stats().accepted, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_error_lists_the_formats_and_suggests_a_format_setting() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let file = write(
        &dir,
        "c.csv",
        "user_id,signup_date\nu1,01/05/2024\nu2,05/31/2024 14:30\nu3,2024-05-01\n",
    );
    let report = dir.path().join("report.jsonl");
    let output = run(
        &dir,
        Some(&receiver),
        &["sync", path_str(&file), "--report", path_str(&report)],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let invalid: Vec<_> = report_lines(&report)
        .into_iter()
        .filter(|l| l["type"] == "invalid")
        .collect();
    assert_eq!(invalid.len(), 2, "{invalid:?}");
    let first = invalid[0]["message"].as_str().unwrap();
    for accepted in [
        "RFC 3339",
        "YYYY-MM-DD HH:MM:SS",
        "YYYY-MM-DD",
        "unix seconds",
    ] {
        assert!(first.contains(accepted), "{first}");
    }
    assert!(
        first.contains(r#"signup_date = { format = "%d/%m/%Y" }"#),
        "{first}"
    );
    let second = invalid[1]["message"].as_str().unwrap();
    assert!(
        second.contains(r#"signup_date = { format = "%m/%d/%Y %H:%M" }"#),
        "{second}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_invalid_records_are_shown_inline_then_a_count() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let mut csv = String::from("user_id,age\nu0,30\n");
    for i in 1..=8 {
        csv.push_str(&format!("u{i},old{i}\n"));
    }
    csv.push_str(",40\n");
    let file = write(&dir, "c.csv", &csv);
    let output = run(&dir, Some(&receiver), &["sync", path_str(&file)]).await;
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    let shown: Vec<&str> = err.lines().filter(|l| l.starts_with("invalid: ")).collect();
    assert_eq!(shown.len(), 5, "{err}");
    assert!(
        shown[0].contains(&format!(
            "{}:3: field `age`: \"old1\" is not an integer",
            path_str(&file)
        )),
        "{err}"
    );
    assert!(shown[4].contains(":7: field `age`"), "{err}");
    assert!(err.contains("and 4 more invalid records"), "{err}");
    assert!(err.contains("--report"), "{err}");

    // With a report, the count points at it; with --quiet, nothing is shown.
    let report = dir.path().join("r.jsonl");
    let output = run(
        &dir,
        Some(&receiver),
        &[
            "sync",
            path_str(&file),
            "--no-state",
            "--report",
            path_str(&report),
        ],
    )
    .await;
    let err = stderr(&output);
    assert!(
        err.contains(&format!(
            "and 4 more invalid records (all in {})",
            path_str(&report)
        )),
        "{err}"
    );
    let output = run(
        &dir,
        Some(&receiver),
        &["sync", path_str(&file), "--no-state", "-q"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        !stderr(&output).contains("invalid: "),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_problem_of_a_mapping_file_is_reported_at_once() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", "user_id,email,seats\nu1,a@x.io,3\n");
    let mapping = write(
        &dir,
        "m.toml",
        "[options]\nnull = \"skip\"\n\n[columns]\nseats = { tpye = \"integer\" }\nemail = { type = \"int\" }\n",
    );
    let output = run(
        &dir,
        None,
        &[
            "sync",
            path_str(&file),
            "--dry-run",
            "--mapping",
            path_str(&mapping),
        ],
    )
    .await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    let m = path_str(&mapping);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert!(
        errors[0].starts_with(&format!("error: {m}:2:8: unknown variant `skip`")),
        "{err}"
    );
    assert!(
        errors[1].starts_with(&format!("error: {m}:5:11: unknown field `tpye`")),
        "{err}"
    );
    assert!(
        errors[2].starts_with(&format!("error: {m}:6:18: unknown variant `int`")),
        "{err}"
    );
    assert!(err.contains("hint: did you mean `type`?"), "{err}");
    assert!(err.contains(&format!("3 problems in {m}")), "{err}");

    // Columns the header lacks are all reported too, each with its line.
    let mapping = write(
        &dir,
        "m2.toml",
        "[identity]\nuser_id = \"User ID\"\n\n[columns]\nEmail = \"email\"\nSeats = { type = \"integer\" }\n",
    );
    let output = run(
        &dir,
        None,
        &[
            "sync",
            path_str(&file),
            "--dry-run",
            "--mapping",
            path_str(&mapping),
        ],
    )
    .await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    let m = path_str(&mapping);
    for (line, column) in [(2, "User ID"), (5, "Email"), (6, "Seats")] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("error: {m}:{line}:"))
                    && l.contains(&format!("`{column}` is not in the header"))),
            "{column}: {err}"
        );
    }
    assert!(err.contains("hint: the header has `email`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_directory_that_cannot_be_made_blames_the_flag() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.csv", &numbered_customers(3));
    let blocker = write(&dir, "a-file", "");
    let bodies = blocker.join("bodies");
    let output = run(
        &dir,
        None,
        &[
            "sync",
            path_str(&file),
            "--dry-run",
            "--dry-run-dir",
            path_str(&bodies),
        ],
    )
    .await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: --dry-run-dir "), "{err}");
    assert!(err.contains("caused by: "), "the reason: {err}");
    let hint = hint(&err);
    assert!(
        hint.contains("--dry-run-dir") && !hint.contains("SEGMENT_HOST"),
        "{err}"
    );
}

/// The `invalid: FILE:LINE: ...` lines of a run's stderr.
fn invalid_lines(err: &str) -> Vec<String> {
    err.lines()
        .filter(|l| l.starts_with("invalid: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_row_gets_one_diagnosis_on_every_path() {
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    // Line 3 has two problems: no identity, and a date that is not one.
    let file = write(
        &dir,
        "c.csv",
        "user_id,signup_date,email\nu1,2024-01-02,a@x.io\n,yesterday,b@x.io\nu3,2024-01-03,c@x.io\n",
    );
    let paths: &[&[&str]] = &[
        &["preview", path_str(&file)],
        &[
            "sync",
            path_str(&file),
            "--no-state",
            "--duplicates",
            "first",
        ],
        &["sync", path_str(&file), "--no-state"],
        &["sync", path_str(&file), "--dry-run"],
        &["sync", path_str(&file)],
    ];
    let mut seen = Vec::new();
    for args in paths {
        let output = run(&dir, Some(&receiver), args).await;
        let shown = invalid_lines(&stderr(&output));
        assert_eq!(shown.len(), 1, "{args:?}: {}", stderr(&output));
        seen.push((args, shown[0].clone()));
    }
    let (_, first) = &seen[0];
    assert!(first.contains(":3: field `user_id`"), "{seen:?}");
    for (args, line) in &seen {
        assert_eq!(line, first, "{args:?} differs: {seen:?}");
    }
}
