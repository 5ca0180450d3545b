//! A PostgreSQL table's expected row count, from the real server on
//! 127.0.0.1:5432 (user postgres, trust auth), one database per test.

use customer_sync::source::postgres::{PostgresOptions, PostgresSource, PostgresTarget};

const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// A database of its own, dropped at the end of the test.
struct TestDb {
    name: String,
}

impl TestDb {
    fn new(setup: &str) -> TestDb {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("custsync_pg_{}_{nanos}", std::process::id());
        execute("postgres", &format!("CREATE DATABASE {name}"));
        execute(&name, setup);
        TestDb { name }
    }

    fn exec(&self, sql: &str) {
        execute(&self.name, sql);
    }

    fn source(
        &self,
        target: PostgresTarget,
        cursor: Option<&str>,
        mark: Option<&str>,
    ) -> PostgresSource {
        PostgresSource::connect(PostgresOptions {
            url: format!("{SERVER}/{}?sslmode=disable", self.name),
            target,
            cursor: cursor.map(str::to_owned),
            resume_after: mark.map(str::to_owned),
        })
        .unwrap()
    }

    fn table(&self, table: &str) -> PostgresSource {
        self.source(PostgresTarget::Table(table.to_owned()), None, None)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        execute(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs `sql` in `database`, on a runtime of its own.
fn execute(database: &str, sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) =
            tokio_postgres::connect(&format!("{SERVER}/{database}"), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
    });
}

#[test]
fn an_analysed_table_expects_the_planners_row_count_and_other_reads_expect_none() {
    // Autovacuum off: it would analyse `fresh` (and refresh `customers`)
    // behind the test's back.
    let db = TestDb::new(
        "CREATE TABLE customers (id int PRIMARY KEY, email text, updated_at int NOT NULL)
             WITH (autovacuum_enabled = false);
         INSERT INTO customers SELECT i, 'c' || i || '@example.com', i FROM generate_series(1, 5000) i;
         ANALYZE customers;
         CREATE TABLE fresh (id int PRIMARY KEY, email text) WITH (autovacuum_enabled = false);
         INSERT INTO fresh SELECT i, 'f' || i FROM generate_series(1, 3000) i;",
    );
    let source = db.table("customers");
    assert_eq!(source.estimated_rows(), Some(5_000));
    let mut source = source.start(&[]).unwrap();
    assert_eq!(source.expected_records(), Some(5_000));
    assert_eq!(source.by_ref().count(), 5_000);
    assert!(source.take_fatal().is_none());

    // Rows added since the ANALYZE count too, as the planner counts them:
    // the density then, times the pages now.
    db.exec("INSERT INTO customers SELECT i, 'c' || i || '@example.com', i FROM generate_series(5001, 6000) i");
    let estimate = db.table("customers").estimated_rows().unwrap();
    assert!((5_900..=6_100).contains(&estimate), "{estimate}");

    // Never analysed: no estimate (reltuples is -1), the table grows as it fills.
    assert_eq!(db.table("fresh").estimated_rows(), None);
    // A query: the planner's guess for it can be far off either way.
    let query = db.source(
        PostgresTarget::Query("SELECT * FROM customers".into()),
        None,
        None,
    );
    assert_eq!(query.estimated_rows(), None);
    // Keyset mode: the first read reads the whole table; a read past a
    // mark reads only what changed since, so the table's count is not its.
    let table = || PostgresTarget::Table("customers".into());
    let first = db.source(table(), Some("updated_at"), None);
    assert!(first.estimated_rows().is_some());
    let next = db.source(table(), Some("updated_at"), Some(r#"["5990","5990"]"#));
    assert_eq!(next.estimated_rows(), None);
    let mut next = next.start(&[]).unwrap();
    assert_eq!(next.expected_records(), None);
    assert_eq!(next.by_ref().count(), 10);
}

#[test]
fn a_read_knows_its_key_column_is_distinct_only_when_no_identity_read_from_it_can_repeat() {
    let db = TestDb::new(
        "CREATE TABLE by_number (id bigint PRIMARY KEY, email text);
         INSERT INTO by_number SELECT i, 'n' || i FROM generate_series(1, 50) i;
         CREATE TABLE by_text (customer_id text PRIMARY KEY, email text, updated_at int NOT NULL);
         INSERT INTO by_text SELECT 'cus_' || i, 'c' || i, i FROM generate_series(1, 50) i;
         CREATE TABLE padded (customer_id char(10) PRIMARY KEY, email text);
         INSERT INTO padded SELECT 'cus_' || i, 'p' || i FROM generate_series(1, 50) i;
         CREATE TABLE by_pair (region text, id int, email text, PRIMARY KEY (region, id));
         INSERT INTO by_pair VALUES ('eu', 1, 'a'), ('us', 1, 'b');
         CREATE TABLE by_uuid (id uuid PRIMARY KEY, email varchar(20));
         INSERT INTO by_uuid VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'u');
         CREATE TABLE by_varchar (id varchar(20) PRIMARY KEY, email text);
         INSERT INTO by_varchar VALUES ('v1', 'v');
         CREATE TABLE parent (id int PRIMARY KEY, email text);
         CREATE TABLE child () INHERITS (parent);
         INSERT INTO parent VALUES (1, 'a');
         INSERT INTO child VALUES (1, 'b');",
    );
    let distinct = |source: PostgresSource| {
        let mut source = source.start(&[]).unwrap();
        let column = source.distinct_column().map(str::to_owned);
        assert!(source.by_ref().count() > 0);
        assert!(source.take_fatal().is_none());
        column
    };
    // A one-column key of numbers, or of text no identity trims: distinct.
    assert_eq!(distinct(db.table("by_number")).as_deref(), Some("id"));
    assert_eq!(
        distinct(db.table("by_text")).as_deref(),
        Some("customer_id")
    );
    // char(n) pads with spaces its equality ignores: still distinct.
    assert_eq!(distinct(db.table("padded")).as_deref(), Some("customer_id"));
    // Not asked: not checked.
    assert_eq!(
        distinct(db.table("by_text").check_distinct_key(false)),
        None
    );
    assert_eq!(distinct(db.table("by_uuid")).as_deref(), Some("id"));
    assert_eq!(distinct(db.table("by_varchar")).as_deref(), Some("id"));
    // A key of two columns: one of them alone can repeat.
    assert_eq!(distinct(db.table("by_pair")), None);
    // A parent's rows include its children's, which its key does not cover.
    assert_eq!(distinct(db.table("parent")), None);
    // A query has no key.
    let query = PostgresTarget::Query("SELECT * FROM by_number".into());
    assert_eq!(distinct(db.source(query, None, None)), None);

    // ` cus_7` is a different key from `cus_7` but the same identity once
    // trimmed, as are keys ending in a tab or a no-break space: not distinct.
    for (key, updated_at) in [(" cus_7", 51), ("cus_8\t", 52), ("cus_9\u{a0}", 53)] {
        db.exec(&format!(
            "DELETE FROM by_text WHERE updated_at > 50;
             INSERT INTO by_text VALUES ('{key}', 'dup', {updated_at})"
        ));
        assert_eq!(distinct(db.table("by_text")), None, "{key:?}");
    }
    // A keyset read past that row does not read it: distinct again.
    let past = db.source(
        PostgresTarget::Table("by_text".into()),
        Some("updated_at"),
        Some(r#"["53","zzzz"]"#),
    );
    db.exec("INSERT INTO by_text VALUES ('cus_100', 'new', 60)");
    assert_eq!(distinct(past).as_deref(), Some("customer_id"));
}
