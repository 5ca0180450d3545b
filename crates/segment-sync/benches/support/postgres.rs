//! The generated customers as a PostgreSQL table, in a database of its own
//! that is created for the bench and dropped at the end.
//!
//! The server is `SEGMENT_SYNC_BENCH_POSTGRES` (a URL to a database the user
//! may connect to and create databases from), by default the one the tests
//! use: `postgres://postgres@127.0.0.1:5432/postgres`, trust auth, no TLS.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

use super::customers::{COLUMNS, Customer};

const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// COPY data is sent in pieces of about this size.
const COPY_PIECE_BYTES: usize = 1 << 20;

/// The server's URL: the environment's, else the default.
pub fn server_url() -> String {
    std::env::var("SEGMENT_SYNC_BENCH_POSTGRES").unwrap_or_else(|_| DEFAULT_SERVER.to_owned())
}

/// Whether the server answers and lets us in, within a few seconds; the
/// error says why not.
pub fn reachable(runtime: &Runtime) -> Result<(), String> {
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), connect(&server_url()))
            .await
            .map_err(|_| "no answer in 5 s".to_owned())?
            .map(drop)
    })
}

async fn connect(url: &str) -> Result<Client, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A database of the bench's own, dropped (with its tables) on drop.
pub struct Database<'r> {
    runtime: &'r Runtime,
    admin: Client,
    name: String,
    client: Client,
    /// The URL of this database, for the CLI (without TLS, as the floor).
    pub url: String,
}

/// A loaded table and what it holds.
pub struct Table {
    pub url: String,
    pub name: String,
    pub rows: u64,
    /// The table's size on disk, indexes included.
    pub bytes: u64,
    /// COPY in, primary key, `VACUUM (FREEZE, ANALYZE)`.
    pub took: Duration,
}

impl<'r> Database<'r> {
    /// Creates `segment_sync_bench_{pid}` (dropping a leftover of that name).
    pub fn create(runtime: &'r Runtime) -> Database<'r> {
        let name = format!("segment_sync_bench_{}", std::process::id());
        runtime.block_on(async {
            let server = server_url();
            let admin = connect(&server)
                .await
                .expect("could not connect to PostgreSQL");
            // One statement a call: neither may run in a transaction block.
            for statement in [
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("CREATE DATABASE {name}"),
            ] {
                admin
                    .batch_execute(&statement)
                    .await
                    .expect("could not create the bench database");
            }
            let url = with_database(&server, &name);
            let client = connect(&url)
                .await
                .expect("could not connect to the bench database");
            Database {
                runtime,
                admin,
                name,
                client,
                url,
            }
        })
    }

    /// Loads customers `1..=rows` into a new table `name`: `text` columns,
    /// `created_at timestamptz`, `lifetime_value double precision`, and
    /// `customer_id` the primary key.
    pub fn load(&self, name: &str, rows: u64) -> Table {
        let started = Instant::now();
        let columns: Vec<String> = COLUMNS
            .iter()
            .map(|&column| {
                let ty = match column {
                    "created_at" => "timestamptz NOT NULL",
                    "lifetime_value" => "double precision NOT NULL",
                    _ => "text NOT NULL",
                };
                format!("{column} {ty}")
            })
            .collect();
        self.runtime.block_on(async {
            self.client
                .batch_execute(&format!(
                    "CREATE TABLE {name} ({}); SET TIME ZONE 'UTC'",
                    columns.join(", ")
                ))
                .await
                .expect("could not create the table");
            let sink = self
                .client
                .copy_in::<_, Bytes>(&format!("COPY {name} ({}) FROM STDIN", COLUMNS.join(", ")))
                .await
                .expect("could not start the COPY");
            futures_util::pin_mut!(sink);
            let mut piece = String::with_capacity(COPY_PIECE_BYTES + 1024);
            for i in 1..=rows {
                text_row(&mut piece, &Customer::new(i));
                if piece.len() >= COPY_PIECE_BYTES || i == rows {
                    let full = std::mem::replace(
                        &mut piece,
                        String::with_capacity(COPY_PIECE_BYTES + 1024),
                    );
                    sink.send(Bytes::from(full))
                        .await
                        .expect("could not send COPY data");
                }
            }
            sink.finish().await.expect("the COPY failed");
            // The index after the data (faster), and hint bits and
            // statistics set now, so no measured run pays for them.
            self.client
                .batch_execute(&format!("ALTER TABLE {name} ADD PRIMARY KEY (customer_id)"))
                .await
                .expect("could not index the table");
            self.client
                .batch_execute(&format!("VACUUM (FREEZE, ANALYZE) {name}"))
                .await
                .expect("could not vacuum the table");
            let bytes: i64 = self
                .client
                .query_one(&format!("SELECT pg_total_relation_size('{name}')"), &[])
                .await
                .expect("could not read the table's size")
                .get(0);
            Table {
                url: self.url.clone(),
                name: name.to_owned(),
                rows,
                bytes: u64::try_from(bytes).unwrap_or(0),
                took: started.elapsed(),
            }
        })
    }

    /// Drops table `name`.
    pub fn drop_table(&self, name: &str) {
        self.runtime
            .block_on(
                self.client
                    .batch_execute(&format!("DROP TABLE IF EXISTS {name}")),
            )
            .expect("could not drop a table");
    }
}

impl Drop for Database<'_> {
    fn drop(&mut self) {
        let name = &self.name;
        if let Err(e) = self.runtime.block_on(
            self.admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")),
        ) {
            eprintln!("could not drop the bench database {name}: {e}");
        }
    }
}

/// `url` with its database (the path) replaced by `database`, and TLS off.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut url = format!("{}/{database}?sslmode=disable", &base[..host_end]);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        if !pair.starts_with("sslmode=") {
            url.push('&');
            url.push_str(pair);
        }
    }
    url
}

/// One customer as a line of COPY text (tab-separated); the generator's
/// values hold no tab, newline or backslash.
fn text_row(out: &mut String, customer: &Customer) {
    for (i, value) in customer.values().into_iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        out.push_str(value);
    }
    out.push('\n');
}
