//! End-to-end: a PostgreSQL table or query as the source. The real server
//! on 127.0.0.1:5432 (user postgres), one database per test, the real
//! binary and the real receiver.

mod common;

use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use segment_receiver::{FaultPlan, Receiver};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_postgres::{Client, NoTls};

/// A database of its own, dropped at the end of the test.
struct TestDb {
    name: String,
    client: Client,
}

impl TestDb {
    async fn new(setup: &str) -> TestDb {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "segsync_pg_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        );
        let admin = connect(&format!("{PG_SERVER}/postgres")).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let client = connect(&format!("{PG_SERVER}/{name}")).await;
        client.batch_execute(setup).await.unwrap();
        TestDb { name, client }
    }

    fn url(&self) -> String {
        format!("{PG_SERVER}/{}?sslmode=disable", self.name)
    }

    async fn exec(&self, sql: &str) {
        self.client.batch_execute(sql).await.unwrap();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_database(&self.name);
    }
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn sync(dir: &TempDir, receiver: &Receiver, args: &[&str]) -> (Output, Value) {
    let report = dir.path().join("report.jsonl");
    let mut all = vec!["sync", "--report", path_str(&report)];
    all.extend_from_slice(args);
    let output = run(dir, Some(receiver), &all).await;
    assert!(report.exists(), "no report: {}", stderr(&output));
    let lines = report_lines(&report);
    let summary = summary(&lines).clone();
    (output, summary)
}

fn report_of(dir: &TempDir) -> Vec<Value> {
    report_lines(&dir.path().join("report.jsonl"))
}

/// `URL --table customers --cursor updated_at EXTRA...`: the customers
/// table of `db` read in cursor mode.
fn customers_by_cursor(db: &TestDb, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        db.url(),
        "--table".into(),
        "customers".into(),
        "--cursor".into(),
        "updated_at".into(),
    ];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    args
}

const CUSTOMERS: &str = "
    CREATE TABLE customers (
        customer_no int PRIMARY KEY,
        email text,
        plan varchar(20),
        updated_at timestamptz NOT NULL DEFAULT '2024-01-01T00:00:00Z'
    );
    INSERT INTO customers (customer_no, email, plan) VALUES
        (1, 'a@example.com', 'pro'), (2, 'b@example.com', 'free'), (3, 'c@example.com', NULL);
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_is_sent_as_a_typed_value_and_the_primary_key_is_the_identity() {
    let db = TestDb::new(
        "CREATE TABLE people (
            person_no bigint PRIMARY KEY,
            t text, v varchar(10), c char(3), i2 int2, i4 int4, i8 int8,
            n numeric(10,2), n_big numeric, f4 float4, f8 float8, b bool,
            d date, ts timestamp, tstz timestamptz, u uuid, j json, jb jsonb,
            tags text[], nums int4[], grid int4[][], missing text
        );
        INSERT INTO people VALUES (
            9007199254740993, 'text', 'var', 'ab', -2, 40, 9007199254740993,
            12.50, 123456789012345678901234.5, 1.5, 0.1, true,
            '1990-05-01', '2024-03-04 05:06:07.25', '2024-03-04 07:06:07+02',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2]}', '{\"k\": {\"x\": null}}',
            ARRAY['x', NULL, 'z'], ARRAY[1, 2], ARRAY[[1, 2], [3, 4]], NULL
        );",
    )
    .await;
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let (output, summary) = sync(&dir, &receiver, &[&db.url(), "--table", "people"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["delivered"], 1);
    let events = receiver.store().events_for_user("9007199254740993");
    assert_eq!(events.len(), 1, "{:?}", receiver.store().events());
    let traits = &events[0]["traits"];
    let expected = json!({
        "t": "text", "v": "var", "c": "ab ", "i2": -2, "i4": 40, "i8": 9007199254740993_i64,
        "n": 12.5, "n_big": "123456789012345678901234.5", "f4": 1.5, "f8": 0.1, "b": true,
        "d": "1990-05-01", "ts": "2024-03-04T05:06:07.250Z", "tstz": "2024-03-04T05:06:07Z",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "j": {"a": [1, 2]}, "jb": {"k": {"x": null}},
        "tags": ["x", null, "z"], "nums": [1, 2], "grid": [[1, 2], [3, 4]],
    });
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(&traits[key], value, "trait {key} in {traits}");
    }
    // NULL follows the default null policy: left out.
    assert!(traits.get("missing").is_none(), "{traits}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_type_stops_the_run_before_anything_is_sent_unless_the_mapping_types_it() {
    let db = TestDb::new(
        "CREATE TABLE places (id int PRIMARY KEY, spot point);
         INSERT INTO places VALUES (1, '(1,2)');",
    )
    .await;
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let output = run(
        &dir,
        Some(&receiver),
        &["sync", &db.url(), "--table", "places"],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("column `spot` has type `point`"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert_eq!(receiver.store().stats().accepted, 0);

    let mapping = write(&dir, "m.toml", "[columns]\nspot = { type = \"string\" }\n");
    let output = run(
        &dir,
        Some(&receiver),
        &[
            "sync",
            &db.url(),
            "--table",
            "places",
            "--mapping",
            path_str(&mapping),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        receiver.store().events_for_user("1")[0]["traits"]["spot"],
        "(1,2)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_value_names_the_table_key_and_column_and_the_run_goes_on() {
    let db = TestDb::new(
        "CREATE TABLE accounts (account_no int PRIMARY KEY, since date);
         INSERT INTO accounts VALUES (1, '2020-01-01'), (2, 'infinity'), (3, NULL);",
    )
    .await;
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let (output, summary) = sync(&dir, &receiver, &[&db.url(), "--table", "accounts"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(summary["delivered"], 2);
    assert_eq!(summary["invalid"], 1);
    let invalid = report_of(&dir)
        .into_iter()
        .find(|l| l["type"] == "invalid")
        .unwrap();
    assert_eq!(invalid["source"], "accounts");
    assert_eq!(invalid["key"], "account_no=2");
    assert_eq!(invalid["field"], "since");
    assert!(
        invalid["message"].as_str().unwrap().contains("infinite"),
        "{invalid}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_trim_to_the_same_identity_are_duplicates_with_or_without_a_state() {
    // Distinct keys to PostgreSQL, one customer once trimmed: the run
    // cannot lean on the key being unique, and checks the identities.
    let db = TestDb::new(
        "CREATE TABLE customers (customer_id text PRIMARY KEY, plan text);
         INSERT INTO customers VALUES ('cus_1', 'a'), ('cus_2', 'b'), (' cus_1', 'c');",
    )
    .await;
    let receiver = receiver(FaultPlan::none()).await;
    for state in [&["--no-state"][..], &[]] {
        let dir = TempDir::new().unwrap();
        let mut args = vec![db.url(), "--table".into(), "customers".into()];
        args.extend(state.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (output, summary) = sync(&dir, &receiver, &args).await;
        // A table cannot be read twice to find the last row: the first is
        // sent, the second refused.
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        assert_eq!(summary["invalid"], 1, "{state:?}: {summary}");
        assert_eq!(summary["delivered"], 2, "{state:?}: {summary}");
        assert_adds_up(&report_of(&dir));
        let refused = report_of(&dir)
            .into_iter()
            .find(|l| l["type"] == "invalid")
            .unwrap();
        assert_eq!(refused["reason"], "duplicate_identity", "{refused}");
        assert_eq!(refused["key"], "customer_id= cus_1", "{refused}");
        // A table has rows, not lines.
        let message = refused["message"].as_str().unwrap();
        assert!(
            message.starts_with("the same identity is on row 1 of this read;"),
            "{message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_sends_changed_and_added_rows_and_reports_removed_ones() {
    let db = TestDb::new(CUSTOMERS).await;
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let (output, summary) = sync(&dir, &receiver, &[&db.url(), "--table", "customers"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["delivered"], 3);
    assert!(dir.path().join(".segment-sync/customers.sqlite").exists());

    db.exec(
        "UPDATE customers SET plan = 'enterprise' WHERE customer_no = 1;
         INSERT INTO customers (customer_no, email) VALUES (4, 'd@example.com');
         DELETE FROM customers WHERE customer_no = 3;",
    )
    .await;
    receiver.store().clear();
    let (output, summary) = sync(&dir, &receiver, &[&db.url(), "--table", "customers"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["read"], 3);
    assert_eq!(summary["delivered"], 2);
    assert_eq!(summary["skipped"], 1);
    assert_eq!(summary["removed"], 1);
    let mut sent: Vec<String> = receiver
        .store()
        .events()
        .iter()
        .map(|e| e["userId"].as_str().unwrap().to_owned())
        .collect();
    sent.sort();
    assert_eq!(sent, ["1", "4"]);
    let removed = report_of(&dir)
        .into_iter()
        .find(|l| l["type"] == "removed")
        .unwrap();
    assert_eq!(removed["userId"], "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_with_events_tracks_changed_added_and_deleted_rows_but_a_cursor_sees_no_deletes() {
    let db = TestDb::new(CUSTOMERS).await;
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let mapping = write(
        &dir,
        "events.toml",
        "[events]\nadded = \"Customer Created\"\nchanged = \"Customer Updated\"\nremoved = \"Customer Deleted\"\n",
    );
    let table = [db.url(), "--table".into(), "customers".into()];
    let cursor = customers_by_cursor(&db, &[]);
    let with_mapping = |args: &[String], name: &str| -> Vec<String> {
        let mut all = args.to_vec();
        all.extend(["--mapping", path_str(&mapping), "--name", name].map(String::from));
        all
    };
    let tracks = |receiver: &Receiver| -> Vec<(String, String, Value)> {
        let mut tracks: Vec<_> = receiver
            .store()
            .events()
            .into_iter()
            .filter(|e| e["type"] == "track")
            .map(|e| {
                (
                    e["event"].as_str().unwrap().to_owned(),
                    e["userId"].as_str().unwrap().to_owned(),
                    e["properties"].clone(),
                )
            })
            .collect();
        tracks.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        tracks
    };
    for (args, name) in [(&table[..], "by_table"), (&cursor[..], "by_cursor")] {
        let args = with_mapping(args, name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (output, summary) = sync(&dir, &receiver, &args).await;
        assert!(output.status.success(), "{name}: {}", stderr(&output));
        assert_eq!(summary["tracked_added"], 3, "{name}: {summary}");
    }

    db.exec(
        "UPDATE customers SET plan = 'enterprise', updated_at = '2024-02-01Z' WHERE customer_no = 1;
         INSERT INTO customers VALUES (4, 'd@example.com', NULL, '2024-02-01Z');
         DELETE FROM customers WHERE customer_no = 3;",
    )
    .await;
    receiver.store().clear();
    let args = with_mapping(&table, "by_table");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (output, summary) = sync(&dir, &receiver, &args).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["removed_sent"], 1, "{summary}");
    assert_eq!(
        tracks(&receiver),
        [
            (
                "Customer Created".into(),
                "4".into(),
                json!({"email": "d@example.com", "updated_at": "2024-02-01T00:00:00Z"})
            ),
            (
                "Customer Deleted".into(),
                "3".into(),
                json!({"email": "c@example.com", "updated_at": "2024-01-01T00:00:00Z"})
            ),
            (
                "Customer Updated".into(),
                "1".into(),
                json!({"plan": "enterprise", "updated_at": "2024-02-01T00:00:00Z"})
            ),
        ]
    );

    // A keyset read has only the rows past its mark: a delete is invisible,
    // so no removed event is sent.
    receiver.store().clear();
    let args = with_mapping(&cursor, "by_cursor");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (output, summary) = sync(&dir, &receiver, &args).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["removed_sent"], 0, "{summary}");
    assert_eq!(
        tracks(&receiver)
            .into_iter()
            .map(|(event, user, _)| (event, user))
            .collect::<Vec<_>>(),
        [
            ("Customer Created".to_owned(), "4".to_owned()),
            ("Customer Updated".to_owned(), "1".to_owned()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_mode_reads_only_rows_past_the_mark_and_never_skips_ties() {
    let db = TestDb::new(CUSTOMERS).await;
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let args = customers_by_cursor(&db, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (output, summary) = sync(&dir, &receiver, &args).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["delivered"], 3);

    // Two rows touched and one added, all with the same new cursor value,
    // and one more at the old mark's value with a higher key (a tie).
    db.exec(
        "UPDATE customers SET plan = 'x', updated_at = '2024-02-01Z' WHERE customer_no IN (1, 2);
         INSERT INTO customers VALUES (5, 'e@example.com', NULL, '2024-02-01Z');
         INSERT INTO customers VALUES (6, 'f@example.com', NULL, '2024-01-01Z');
         DELETE FROM customers WHERE customer_no = 3;",
    )
    .await;
    receiver.store().clear();
    let (output, summary) = sync(&dir, &receiver, &args).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["read"], 4, "{summary}");
    assert_eq!(summary["delivered"], 4);
    // Deletes are invisible in this mode.
    assert_eq!(summary["removed"], 0);

    receiver.store().clear();
    let (output, summary) = sync(&dir, &receiver, &args).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["read"], 0, "{summary}");
    assert_eq!(receiver.store().stats().accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_mode_keeps_the_mark_until_failed_rows_are_delivered() {
    let db = TestDb::new(CUSTOMERS).await;
    let receiver = receiver(FaultPlan::user_id("2", 400, None)).await;
    let dir = TempDir::new().unwrap();
    let args = customers_by_cursor(&db, &["--batch-size", "1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (output, summary) = sync(&dir, &receiver, &args).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(summary["failed"], 1, "{summary}");

    receiver.set_faults(FaultPlan::none());
    let (output, summary) = sync(&dir, &receiver, &args).await;
    assert!(output.status.success(), "{}", stderr(&output));
    // Read again from the old mark: the failed row is retried, the others skipped.
    assert_eq!(summary["read"], 3, "{summary}");
    assert_eq!(summary["delivered"], 1, "{summary}");
    assert_eq!(receiver.store().events_for_user("2").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_is_a_source_and_preview_mapping_and_dry_run_work_on_it() {
    let db = TestDb::new(CUSTOMERS).await;
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let url = db.url();
    let query = "SELECT customer_no AS user_id, email FROM customers WHERE plan IS NOT NULL;";

    let output = run(&dir, Some(&receiver), &["sync", &url, "--query", query]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--name"), "{}", stderr(&output));

    let (output, summary) = sync(
        &dir,
        &receiver,
        &[&url, "--query", query, "--name", "paying"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["delivered"], 2);
    assert_eq!(
        receiver.store().events_for_user("1")[0]["traits"]["email"],
        "a@example.com"
    );

    let output = run(
        &dir,
        None,
        &["preview", &url, "--table", "customers", "-n", "1"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let shown: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["userId"], "1");
    assert_eq!(shown["traits"]["updated_at"], "2024-01-01T00:00:00Z");

    let output = run(
        &dir,
        None,
        &["mapping", "--print", &url, "--table", "customers"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("customer_no"));

    receiver.store().clear();
    let (output, summary) = sync(
        &dir,
        &receiver,
        &[&url, "--table", "customers", "--dry-run"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["valid"], 3);
    assert_eq!(receiver.store().stats().accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_table_query_and_permission_errors_exit_2_with_a_hint_and_no_password() {
    let db = TestDb::new(&format!(
        "{CUSTOMERS}
         DROP ROLE IF EXISTS segsync_noread; CREATE ROLE segsync_noread LOGIN;"
    ))
    .await;
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let cases: [(String, Vec<&str>, &str, &str); 5] = [
        (
            "postgres://postgres:hunter2@127.0.0.1:1/x?sslmode=disable".into(),
            vec!["--table", "customers"],
            "cannot connect",
            "is the server running on 127.0.0.1:1",
        ),
        (
            db.url(),
            vec!["--table", "nope"],
            "table nope does not exist",
            "--table",
        ),
        (
            db.url(),
            vec!["--query", "SELEC 1", "--name", "q"],
            "the query does not run",
            "--query",
        ),
        (
            format!(
                "postgres://segsync_noread:hunter2@127.0.0.1:5432/{}?sslmode=disable",
                db.name
            ),
            vec!["--table", "customers"],
            "permission denied",
            "GRANT SELECT ON \"public\".\"customers\" TO \"segsync_noread\"",
        ),
        (
            format!(
                "postgres://segsync_noread@127.0.0.1:5432/{}?sslmode=disable",
                db.name
            ),
            vec![
                "--query",
                "SELECT customer_no AS user_id FROM customers",
                "--name",
                "q",
            ],
            "permission denied",
            "GRANT SELECT",
        ),
    ];
    for (url, extra, error, hint) in cases {
        let mut args = vec!["sync", url.as_str()];
        args.extend(extra);
        let output = run(&dir, Some(&receiver), &args).await;
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(error), "{args:?}: {err}");
        assert!(
            err.contains("hint: ") && err.contains(hint),
            "{args:?}: {err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
    assert_eq!(receiver.store().stats().accepted, 0);
    db.exec("DROP ROLE segsync_noread").await;
}

/// A view of `n` customers `u0..` that yields one row per millisecond
/// while `pacing.delay` is set, so that a test strikes mid-read whatever the
/// socket buffers hold; setting it to 0 lets the rerun read at full speed.
fn paced(n: usize) -> String {
    format!(
        "CREATE TABLE customers (user_id text PRIMARY KEY, email text);
         INSERT INTO customers SELECT 'u' || i, 'u' || i || '@example.com' FROM generate_series(0, {}) i;
         CREATE TABLE pacing (delay float8 NOT NULL);
         INSERT INTO pacing VALUES (0.001);
         CREATE FUNCTION pace(t text) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
           BEGIN PERFORM pg_sleep((SELECT delay FROM pacing)); RETURN t; END $$;
         CREATE VIEW customers_paced AS SELECT pace(user_id) AS user_id, email FROM customers;",
        n - 1
    )
}

/// More than the engine's first chunk (2,048 rows), which is read before
/// anything is sent.
const PACED_ROWS: usize = 3_000;

async fn wait_for_accepted(receiver: &Receiver, at_least: u64) {
    while receiver.store().stats().accepted < at_least {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn users(receiver: &Receiver) -> std::collections::BTreeSet<String> {
    receiver
        .store()
        .events()
        .iter()
        .map(|e| e["userId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_mid_run_exits_1_with_everything_accounted_for_and_the_next_run_finishes()
{
    let db = TestDb::new(&paced(PACED_ROWS)).await;
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let report = dir.path().join("report.jsonl");
    let url = db.url();
    let child = command(
        &dir,
        Some(&receiver),
        &[
            "sync",
            &url,
            "--table",
            "customers_paced",
            "--batch-size",
            "100",
            "--quiet",
            "--report",
            path_str(&report),
        ],
    )
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    wait_for_accepted(&receiver, 1).await;
    db.exec(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = '{}' AND application_name = 'segment-sync'",
        db.name
    ))
    .await;
    let output = child.wait_with_output().await.unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the connection to postgres://postgres@127.0.0.1:5432"),
        "{err}"
    );
    assert!(err.contains("hint: run again"), "{err}");
    let lines = report_lines(&report);
    let summary = summary(&lines);
    let read = summary["read"].as_u64().unwrap();
    assert!(read < PACED_ROWS as u64, "{summary}");
    assert_eq!(
        summary["delivered"].as_u64().unwrap() + summary["pending"].as_u64().unwrap(),
        read,
        "{summary}"
    );
    assert_eq!(summary["removed"], 0);
    assert_eq!(
        users(&receiver).len() as u64,
        summary["delivered"].as_u64().unwrap()
    );

    db.exec("UPDATE pacing SET delay = 0").await;
    let (output, summary) = sync(&dir, &receiver, &[&url, "--table", "customers_paced"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["read"], PACED_ROWS as u64);
    assert_eq!(users(&receiver).len(), PACED_ROWS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_read_then_a_rerun_delivers_every_row() {
    let db = TestDb::new(&paced(PACED_ROWS)).await;
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let url = db.url();
    let mut child = command(
        &dir,
        Some(&receiver),
        &[
            "sync",
            &url,
            "--table",
            "customers_paced",
            "--batch-size",
            "100",
            "--quiet",
        ],
    )
    .spawn()
    .unwrap();
    wait_for_accepted(&receiver, 1).await;
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    assert!(
        users(&receiver).len() < PACED_ROWS,
        "the kill came after the end"
    );

    db.exec("UPDATE pacing SET delay = 0").await;
    let (output, summary) = sync(&dir, &receiver, &[&url, "--table", "customers_paced"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["read"], PACED_ROWS as u64);
    assert_eq!(users(&receiver).len(), PACED_ROWS);
    // Nothing accepted twice under different messageIds.
    assert!(receiver.store().events().len() <= PACED_ROWS + receiver.store().duplicates().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_in_the_url_appears_in_no_output_report_or_state() {
    let db = TestDb::new(CUSTOMERS).await;
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    // Trust auth ignores the password; it is still in the URL given.
    let url = format!(
        "postgres://postgres:hunter2@127.0.0.1:5432/{}?sslmode=disable",
        db.name
    );
    let (output, summary) = sync(&dir, &receiver, &[&url, "--table", "customers"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["delivered"], 3);
    let err = stderr(&output);
    assert!(
        err.contains("postgres://postgres:***@127.0.0.1:5432"),
        "{err}"
    );
    let mut seen = vec![err, String::from_utf8_lossy(&output.stdout).into_owned()];
    for entry in walk(dir.path()) {
        seen.push(String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).into_owned());
    }
    assert!(seen.len() > 3, "the report and the state files were read");
    for text in seen {
        assert!(!text.contains("hunter2"));
    }
    for event in receiver.store().events() {
        assert!(!event.to_string().contains("hunter2"));
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_table_syncs_as_group_calls_incrementally() {
    let db = TestDb::new(
        "CREATE TABLE accounts (
            account_no int PRIMARY KEY,
            owner text NOT NULL,
            name text,
            seats int
        );
        INSERT INTO accounts VALUES (1, 'u1', 'Initech', 10), (2, 'u2', 'Hooli', 200);",
    )
    .await;
    let receiver = receiver(FaultPlan::none()).await;
    let dir = TempDir::new().unwrap();
    let mapping = write(
        &dir,
        "accounts.toml",
        "[identity]\ngroup_id = \"account_no\"\nuser_id = \"owner\"\n",
    );
    let url = db.url();
    let args = [
        url.as_str(),
        "--table",
        "accounts",
        "--call",
        "group",
        "--mapping",
        path_str(&mapping),
    ];
    let (output, summary) = sync(&dir, &receiver, &args).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["delivered"], 2, "{summary}");
    let events = receiver.store().events();
    let initech = events.iter().find(|e| e["groupId"] == "1").unwrap();
    assert_eq!(
        (&initech["type"], &initech["userId"], &initech["traits"]),
        (
            &json!("group"),
            &json!("u1"),
            &json!({"name": "Initech", "seats": 10})
        )
    );

    db.exec("UPDATE accounts SET seats = 12 WHERE account_no = 2")
        .await;
    let (output, summary) = sync(&dir, &receiver, &args).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["delivered"], 1, "{summary}");
    let last = receiver.store().events().pop().unwrap();
    assert_eq!(
        (&last["groupId"], &last["traits"]["seats"]),
        (&json!("2"), &json!(12))
    );
}
