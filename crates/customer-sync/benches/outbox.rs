//! Outbox write cost per event, the two designs side by side: the sync
//! state's append-only log (`NAME.outbox`, truncated once a run ends with
//! nothing in flight) and segment-client's SQLite outbox table (a row
//! inserted before sending and deleted after the answer), both in chunks of
//! 2,048 events of about 330 bytes, SQLite in WAL mode with
//! `synchronous = NORMAL` as both crates use it. Prints CPU and wall time;
//! `cargo bench -p customer-sync --bench outbox -- [EVENTS] [DIR]`.
use std::io::Write;
use std::time::Instant;

fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn main() {
    // `cargo bench` passes `--bench`; the numbers are the arguments that parse.
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = args
        .next()
        .unwrap_or_else(|| tmp.path().display().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let event = |i: usize| {
        format!(
            r#"{{"type":"identify","userId":"cus_{i}","messageId":"{i:036}","traits":{{"email":"c{i}@example.com","firstName":"F{i}","lastName":"L{i}","plan":"pro","createdAt":"2024-03-01T09:30:00Z"}},"timestamp":"2026-12-01T10:00:00Z"}}"#
        )
    };

    let (c0, t0) = (cpu(), Instant::now());
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{dir}/x.outbox"))
        .unwrap();
    let mut buf = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(2048) {
        buf.clear();
        for &i in chunk {
            write!(buf, r#"{{"key":"u:cus_{i}","hash":1,"sourceHash":2,"messageId":"{i:036}","source":"c.csv","line":{i},"traits":["email"],"event":{}}}"#, event(i)).unwrap();
            buf.push(b'\n');
        }
        log.write_all(&buf).unwrap();
    }
    log.set_len(0).unwrap();
    println!(
        "append-only log:      {:.3} s CPU, {:.3} s wall for {n} events",
        cpu() - c0,
        t0.elapsed().as_secs_f64()
    );

    let conn = rusqlite::Connection::open(format!("{dir}/x.sqlite")).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
        CREATE TABLE outbox (message_id TEXT PRIMARY KEY, user_id TEXT, anonymous_id TEXT, event BLOB NOT NULL, queued_at INTEGER NOT NULL);").unwrap();
    let (c0, t0) = (cpu(), Instant::now());
    let mut conn = conn;
    let ids: Vec<usize> = (0..n).collect();
    for chunk in ids.chunks(2048) {
        let tx = conn.transaction().unwrap();
        {
            let mut ins = tx
                .prepare_cached("INSERT INTO outbox VALUES (?1, ?2, NULL, ?3, 0)")
                .unwrap();
            for &i in chunk {
                ins.execute(rusqlite::params![
                    format!("{i:036}"),
                    format!("cus_{i}"),
                    event(i).as_bytes()
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
        let tx = conn.transaction().unwrap();
        {
            let mut del = tx
                .prepare_cached("DELETE FROM outbox WHERE message_id = ?1")
                .unwrap();
            for &i in chunk {
                del.execute([format!("{i:036}")]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    println!(
        "sqlite insert+delete: {:.3} s CPU, {:.3} s wall for {n} events",
        cpu() - c0,
        t0.elapsed().as_secs_f64()
    );
}
