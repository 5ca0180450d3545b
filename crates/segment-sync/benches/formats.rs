//! Every input format next to its floor, in one invocation.
//!
//! Writes the same generated customers (default 1,000,000; `-- --rows N`) as
//! NDJSON, a JSON array and CSV, and loads them into a PostgreSQL table (in a
//! database the bench creates and drops; skipped, with a line saying so,
//! when the server at `SEGMENT_SYNC_BENCH_POSTGRES`, by default
//! `postgres://postgres@127.0.0.1:5432/postgres`, does not answer), and for
//! each format runs, as child processes measured exactly with `wait4`:
//!
//! - the format's **floor** ([`floor`]): a single-threaded program that
//!   parses the file (or the table's binary COPY) into borrowed structs,
//!   builds the same identify events, batches them under Segment's limits and
//!   gzips them, run before the first CLI case and after each one (a
//!   case's ratio is to the mean of the two floors around it: the machine
//!   drifts, and neighbours see the same machine; rows are printed in the
//!   order they ran, and a floor's row shows its CPU against the mean of all
//!   floors, so the drift is visible);
//! - the release `segment-sync sync FILE --quiet` binary (`sync URL --table
//!   customers` for PostgreSQL) with `--no-state --dry-run`, with a fresh
//!   state and `--dry-run`, with `--no-state` to the receiver, and with a
//!   fresh state to the receiver (a first run).
//!
//! Only the client's CPU is counted: the PostgreSQL server's work (the same
//! COPY for the floor and the CLI) is not in either figure.
//!
//! Each CLI figure is printed as a ratio of its CPU seconds to the floor's;
//! the target is 1.3x for every case, and peak RSS under 64 MB. Figures are
//! printed, never asserted (DESIGN.md); a run that does not deliver every
//! record, a floor that does not batch every event, or a floor whose event
//! differs from the one the CLI sends (checked first, on a 3-row file, but
//! for `messageId` and `timestamp`; for PostgreSQL on a 3-row table) makes
//! the bench exit non-zero.
//!
//! `-- --formats csv,ndjson,postgres` runs only some formats; `-- --cases
//! dry,dry-state,send,send-state` only some CLI cases; `-- --keep-inputs DIR`
//! writes the generated files into DIR and leaves them there (to profile).
//! `-- --instructions` counts instructions instead, with `valgrind
//! --tool=callgrind`, for the file formats' floors and dry-run cases (30,000
//! rows unless `--rows` says otherwise): a measure the machine's load does
//! not move. `-- --baseline BIN` runs the file formats' dry-run cases by
//! `BIN` (another build of `segment-sync`) and by this build alternately,
//! `--pairs N` times each (default 5), and prints the median of the pairs'
//! CPU ratios: the measure that shows a change of a few percent here.

mod floor;
mod support;

use std::ffi::OsString;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use support::customers::{Format, Input, generate};
use support::postgres::{Database, Table};
use support::process::{Measured, grouped, measure, megabytes, tail};
use support::receiver::{Control, ReceiverProcess, SERVE_RECEIVER, serve_receiver};

const DEFAULT_ROWS: u64 = 1_000_000;
const BIN: &str = env!("CARGO_BIN_EXE_segment-sync");
/// Makes the re-executed bench binary run one floor instead: `--floor FORMAT
/// PATH`, or `--floor postgres URL TABLE`.
const RUN_FLOOR: &str = "--floor";
const WRITE_KEY: &str = "bench-write-key";
const TARGET_RATIO: f64 = 1.3;
const TARGET_PEAK_MB: f64 = 64.0;

/// One way of running the CLI over a file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    DryRun,
    DryRunState,
    Send,
    SendState,
}

impl Case {
    const ALL: [Case; 4] = [Case::DryRun, Case::DryRunState, Case::Send, Case::SendState];

    fn name(self) -> &'static str {
        match self {
            Case::DryRun => "dry",
            Case::DryRunState => "dry-state",
            Case::Send => "send",
            Case::SendState => "send-state",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Case::DryRun => "--no-state --dry-run",
            Case::DryRunState => "state, --dry-run",
            Case::Send => "--no-state -> receiver",
            Case::SendState => "state -> receiver (first run)",
        }
    }

    fn flags(self) -> &'static [&'static str] {
        match self {
            Case::DryRun => &["--no-state", "--dry-run"],
            Case::DryRunState => &["--dry-run"],
            Case::Send => &["--no-state"],
            Case::SendState => &[],
        }
    }

    fn sends(self) -> bool {
        matches!(self, Case::Send | Case::SendState)
    }
}

/// What the bench can read: a file format, or a PostgreSQL table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File(Format),
    Postgres,
}

impl Kind {
    const POSTGRES: &'static str = "postgres";

    fn name(self) -> &'static str {
        match self {
            Kind::File(format) => format.extension(),
            Kind::Postgres => Kind::POSTGRES,
        }
    }

    fn from_name(name: &str) -> Option<Kind> {
        match name {
            Kind::POSTGRES => Some(Kind::Postgres),
            _ => Format::from_extension(name).map(Kind::File),
        }
    }
}

/// What one format's cases read: a generated file or a loaded table.
enum Subject {
    File(Input),
    Table(Table),
}

impl Subject {
    fn name(&self) -> &'static str {
        match self {
            Subject::File(input) => input.format.extension(),
            Subject::Table(_) => Kind::POSTGRES,
        }
    }

    fn rows(&self) -> u64 {
        match self {
            Subject::File(input) => input.rows,
            Subject::Table(table) => table.rows,
        }
    }

    /// What follows `segment-sync sync`.
    fn cli_source(&self) -> Vec<OsString> {
        match self {
            Subject::File(input) => vec![input.path.clone().into()],
            Subject::Table(table) => vec![
                table.url.clone().into(),
                "--table".into(),
                table.name.clone().into(),
            ],
        }
    }

    /// What follows `--floor`.
    fn floor_args(&self) -> Vec<OsString> {
        match self {
            Subject::File(input) => {
                vec![input.format.extension().into(), input.path.clone().into()]
            }
            Subject::Table(table) => vec![
                Kind::POSTGRES.into(),
                table.url.clone().into(),
                table.name.clone().into(),
            ],
        }
    }

    /// This bench binary run as the floor over this input.
    fn floor_command(&self) -> Command {
        let exe = std::env::current_exe().expect("the bench binary could not find its own path");
        let mut command = Command::new(exe);
        command.arg(RUN_FLOOR).args(self.floor_args());
        command
    }

    /// `segment-sync sync` over this input as `case`, with `state` as its
    /// state, run by the binary `bin` ([`BIN`], or a `--baseline`).
    fn cli_command(&self, bin: &Path, case: Case, state: &Path) -> Command {
        let mut command = Command::new(bin);
        command
            .arg("sync")
            .args(self.cli_source())
            .args(["--quiet", "--name", "bench", "--state"])
            .arg(state)
            .args(case.flags())
            .env("SEGMENT_WRITE_KEY", WRITE_KEY);
        command
    }
}

struct Options {
    /// `None`: [`DEFAULT_ROWS`], or [`INSTRUCTION_ROWS`] with `--instructions`.
    rows: Option<u64>,
    /// `None`: every file format, and PostgreSQL when the server answers.
    formats: Option<Vec<Kind>>,
    cases: Vec<Case>,
    /// Where the generated inputs are written and left, for profiling.
    keep_inputs: Option<std::path::PathBuf>,
    /// Count instructions under callgrind instead of measuring CPU seconds.
    instructions: bool,
    /// Another build of `segment-sync` to run alternately with this one.
    baseline: Option<std::path::PathBuf>,
    /// Pairs of runs per case with `--baseline`.
    pairs: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == SERVE_RECEIVER) {
        serve_receiver();
        return;
    }
    if let Some(at) = args.iter().position(|arg| arg == RUN_FLOOR) {
        run_floor_child(&args[at + 1..]);
        return;
    }
    let options = parse_args(&args);
    let dir = tempfile::tempdir().expect("could not create a temp dir");
    if options.instructions {
        count_instructions(&options, dir.path());
        return;
    }
    if let Some(baseline) = &options.baseline {
        compare_with_baseline(&options, baseline, dir.path());
        return;
    }
    let rows = options.rows.unwrap_or(DEFAULT_ROWS);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("could not start a tokio runtime");
    let receiver = ReceiverProcess::spawn();
    let control = Control::new(&runtime, &receiver.url);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("machine  {cores} cores, shared with the receiver process");
    println!("binary   {BIN}");
    println!(
        "ratio    client CPU / floor CPU (target <= {TARGET_RATIO}x); peak RSS target < {TARGET_PEAK_MB} MB"
    );

    let postgres = support::postgres::reachable(&runtime);
    let formats = match (options.formats, &postgres) {
        (Some(formats), Err(problem)) if formats.contains(&Kind::Postgres) => {
            eprintln!(
                "postgres: {} cannot be reached ({problem})",
                support::postgres::server_url()
            );
            std::process::exit(2)
        }
        (Some(formats), _) => formats,
        (None, result) => {
            let mut formats: Vec<Kind> = Format::ALL.into_iter().map(Kind::File).collect();
            match result {
                Ok(()) => formats.push(Kind::Postgres),
                Err(problem) => println!(
                    "postgres skipped: {} cannot be reached ({problem})",
                    support::postgres::server_url()
                ),
            }
            formats
        }
    };

    let mut failures = Vec::new();
    for kind in formats {
        // PostgreSQL's tables live in a database of the bench's own,
        // dropped when this format is done.
        let database = (kind == Kind::Postgres).then(|| Database::create(&runtime));
        let check = match (kind, &database) {
            (Kind::File(format), _) => check_floor_matches_cli(dir.path(), |small| {
                Subject::File(generate(small, format, 3))
            }),
            (Kind::Postgres, Some(database)) => {
                let checked = check_floor_matches_cli(dir.path(), |_| {
                    Subject::Table(database.load("customers_check", 3))
                });
                database.drop_table("customers_check");
                checked
            }
            (Kind::Postgres, None) => unreachable!("the database is created above"),
        };
        if let Err(problem) = check {
            failures.push(format!(
                "{}: the floor does not build the CLI's event: {problem}",
                kind.name()
            ));
        }
        let input = match (kind, &database) {
            (Kind::File(format), _) => {
                let inputs = options.keep_inputs.as_deref().unwrap_or(dir.path());
                Subject::File(generate(inputs, format, rows))
            }
            (Kind::Postgres, Some(database)) => Subject::Table(database.load("customers", rows)),
            (Kind::Postgres, None) => unreachable!("the database is created above"),
        };
        println!();
        match &input {
            Subject::File(file) => println!(
                "{}  {} rows, {} (written in {:.1} s)",
                input.name(),
                grouped(file.rows),
                megabytes(file.bytes),
                file.took.as_secs_f64()
            ),
            Subject::Table(table) => println!(
                "{}  {} rows, a {} table (loaded in {:.1} s: COPY, primary key, VACUUM)",
                input.name(),
                grouped(table.rows),
                megabytes(table.bytes),
                table.took.as_secs_f64()
            ),
        }
        println!(
            "  {:<32} {:>8} {:>8} {:>7} {:>9}  result",
            "case", "wall", "cpu", "ratio", "peak RSS"
        );
        // A floor runs before the first case and after each one, and each
        // case is compared with the two floors around it: on a shared
        // machine the same floor can take twice as long a minute later, and
        // neighbours see the same machine.
        let mut floors = vec![run_floor(&input, &mut failures)];
        let mut runs: Vec<(Case, Measured, String)> = Vec::new();
        for &case in &options.cases {
            let (run, result) = run_case(&input, case, dir.path(), &control, &mut failures);
            runs.push((case, run, result));
            floors.push(run_floor(&input, &mut failures));
        }
        // Printed in the order they ran, each case between its two floors.
        let mean = floors.iter().map(|f| f.cpu_seconds).sum::<f64>() / floors.len() as f64;
        let print_floor = |n: usize| {
            let floor = &floors[n];
            print_row(
                &format!("floor {}", n + 1),
                floor,
                floor.cpu_seconds / mean,
                "",
            );
        };
        print_floor(0);
        for (n, (case, run, result)) in runs.iter().enumerate() {
            let around = (floors[n].cpu_seconds + floors[n + 1].cpu_seconds) / 2.0;
            let ratio = run.cpu_seconds / around;
            let verdict = if ratio <= TARGET_RATIO && run.peak_mb() < TARGET_PEAK_MB {
                "ok"
            } else {
                "MISSED"
            };
            print_row(case.describe(), run, ratio, &format!("{result}  {verdict}"));
            print_floor(n + 1);
        }
        // The input can be large; only one format's file exists at a time.
        if let Subject::File(file) = &input
            && options.keep_inputs.is_none()
        {
            let _ = std::fs::remove_file(&file.path);
        }
        drop(database);
    }
    drop(receiver);
    if !failures.is_empty() {
        for failure in &failures {
            eprintln!("{failure}");
        }
        std::process::exit(1);
    }
}

/// Rows read by default with `--instructions`: callgrind runs some fifty
/// times slower than the program it counts.
const INSTRUCTION_ROWS: u64 = 30_000;

/// `--instructions`: each file format's floor and the CLI's dry-run cases
/// counted in instructions by `valgrind --tool=callgrind`, which unlike CPU
/// seconds do not move with the machine's load. The sending cases and
/// PostgreSQL are left out (the receiver's and the server's timing would
/// enter the count).
fn count_instructions(options: &Options, dir: &Path) {
    let rows = options.rows.unwrap_or(INSTRUCTION_ROWS);
    println!(
        "instructions  valgrind --tool=callgrind, {} rows, client / floor",
        grouped(rows)
    );
    let mut failed = false;
    for input in file_inputs(options, dir, rows, "counted") {
        let floor = callgrind(&mut input.floor_command());
        let Ok(floor) = floor else {
            eprintln!("{} floor: {}", input.name(), floor.unwrap_err());
            failed = true;
            continue;
        };
        println!("  {:<32} {:>15}", "floor", grouped(floor));
        for &case in options.cases.iter().filter(|case| !case.sends()) {
            let state = tempfile::tempdir_in(dir).expect("could not create a state dir");
            let counted = callgrind(&mut input.cli_command(Path::new(BIN), case, state.path()));
            match counted {
                Ok(n) => println!(
                    "  {:<32} {:>15} {:>6.2}x",
                    case.describe(),
                    grouped(n),
                    n as f64 / floor as f64
                ),
                Err(problem) => {
                    eprintln!("{} {}: {problem}", input.name(), case.describe());
                    failed = true;
                }
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}

/// Pairs of runs per case with `--baseline` unless `--pairs` says otherwise.
const BASELINE_PAIRS: usize = 5;

/// `--baseline BIN`: the dry-run cases of each file format run by `BIN` (an
/// older build of `segment-sync`) and by this build, alternated run by run,
/// with the median of each pair's CPU ratio, this build over `BIN`. The
/// machine's load moves a floor's CPU by a quarter within an invocation;
/// two neighbouring runs see the same machine, so a pair's ratio shows a
/// change of a few percent that the floor ratios cannot.
fn compare_with_baseline(options: &Options, baseline: &Path, dir: &Path) {
    let rows = options.rows.unwrap_or(DEFAULT_ROWS);
    println!(
        "baseline  {} (this build: {BIN}), {} rows, {} pairs; CPU seconds, this build / baseline",
        baseline.display(),
        grouped(rows),
        options.pairs
    );
    let mut failed = false;
    for input in file_inputs(options, dir, rows, "compared") {
        for &case in options.cases.iter().filter(|case| !case.sends()) {
            let mut run = |bin: &Path| {
                let state = tempfile::tempdir_in(dir).expect("could not create a state dir");
                let mut command = input.cli_command(bin, case, state.path());
                let run = measure(command.stdout(Stdio::null()).stderr(Stdio::null()));
                if !run.success {
                    eprintln!(
                        "{} {} by {}: {}",
                        input.name(),
                        case.describe(),
                        bin.display(),
                        run.ended
                    );
                    failed = true;
                }
                run.cpu_seconds
            };
            let (mut old, mut new, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..options.pairs {
                let (before, now) = (run(baseline), run(Path::new(BIN)));
                old.push(before);
                new.push(now);
                ratios.push(now / before);
            }
            let (low, high) = (
                ratios.iter().copied().fold(f64::INFINITY, f64::min),
                ratios.iter().copied().fold(0.0, f64::max),
            );
            println!(
                "  {:<24} baseline {:>6.2} s  this {:>6.2} s  {:>6.3}x  (pairs {low:.3}-{high:.3})",
                case.describe(),
                median(&mut old),
                median(&mut new),
                median(&mut ratios),
            );
        }
    }
    if failed {
        std::process::exit(1);
    }
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() % 2 {
        0 => (values[middle - 1] + values[middle]) / 2.0,
        _ => values[middle],
    }
}

/// Each file format asked for (all by default), generated in turn, its name
/// printed first; PostgreSQL, which these modes leave out, skipped with a
/// line saying they `only files are {what}`.
fn file_inputs<'a>(
    options: &'a Options,
    dir: &'a Path,
    rows: u64,
    what: &'a str,
) -> impl Iterator<Item = Subject> + 'a {
    let formats = options
        .formats
        .clone()
        .unwrap_or_else(|| Format::ALL.into_iter().map(Kind::File).collect());
    formats.into_iter().filter_map(move |kind| {
        let Kind::File(format) = kind else {
            println!("\npostgres skipped: only files are {what}");
            return None;
        };
        let input = Subject::File(generate(
            options.keep_inputs.as_deref().unwrap_or(dir),
            format,
            rows,
        ));
        println!("\n{}", input.name());
        Some(input)
    })
}

/// Runs `command` under callgrind; its instruction count, from the
/// `Collected : N` line valgrind prints.
fn callgrind(command: &mut Command) -> Result<u64, String> {
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(command.get_program())
        .args(command.get_args())
        .envs(
            command
                .get_envs()
                .filter_map(|(key, value)| Some((key, value?))),
        )
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run valgrind ({e}); hint: apt-get install valgrind"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{}; stderr:\n{}", out.status, tail(&stderr, 20)));
    }
    stderr
        .lines()
        .find_map(|line| {
            line.split_once("Collected :")
                .map(|(_, n)| n.trim().parse().ok())
        })
        .flatten()
        .ok_or_else(|| format!("no count in valgrind's output:\n{}", tail(&stderr, 20)))
}

fn print_row(label: &str, run: &Measured, ratio: f64, result: &str) {
    println!(
        "  {label:<32} {:>6.2} s {:>6.2} s {:>6.2}x {:>6.1} MB  {result}",
        run.wall.as_secs_f64(),
        run.cpu_seconds,
        ratio,
        run.peak_mb()
    );
}

/// Runs the floor for `input` in a child process.
fn run_floor(input: &Subject, failures: &mut Vec<String>) -> Measured {
    let out = tempfile::NamedTempFile::new().expect("could not create a temp file");
    let run = measure(
        input
            .floor_command()
            .stdin(Stdio::null())
            .stdout(out.reopen().expect("could not reopen a temp file")),
    );
    let printed = std::fs::read_to_string(out.path()).unwrap_or_default();
    let events: u64 = printed
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if !run.success || events != input.rows() {
        failures.push(format!(
            "{} floor: {events} of {} events batched, {}",
            input.name(),
            input.rows(),
            run.ended
        ));
    }
    run
}

/// The child's side of [`run_floor`]: prints `EVENTS REQUESTS JSON_BYTES GZIP_BYTES`.
fn run_floor_child(args: &[String]) {
    let source = match args {
        [kind, url, table, ..] if kind == Kind::POSTGRES => floor::Source::Table { url, table },
        [format, path, ..] => floor::Source::File(
            Format::from_extension(format).unwrap_or_else(|| usage("unknown floor format")),
            Path::new(path),
        ),
        _ => usage("--floor needs a format and a path (postgres: a URL and a table)"),
    };
    let out = floor::run(source);
    println!(
        "{} {} {} {}\n{}",
        out.events, out.requests, out.json_bytes, out.gzip_bytes, out.first_event
    );
}

/// Checks that the floor builds the CLI's event: the first event of a small
/// input (3 rows, made by `small` in a temp dir), as the floor builds it and
/// as the CLI sends it (a dry run's first body), equal but for `messageId`
/// and `timestamp`.
fn check_floor_matches_cli(dir: &Path, small: impl FnOnce(&Path) -> Subject) -> Result<(), String> {
    let dir = tempfile::tempdir_in(dir).map_err(|e| e.to_string())?;
    let input = small(dir.path());
    let floor = input.floor_command().output().map_err(|e| e.to_string())?;
    let printed = String::from_utf8_lossy(&floor.stdout);
    let floor_event = printed.lines().nth(1).unwrap_or_default();
    let bodies = dir.path().join("bodies");
    let cli = Command::new(BIN)
        .arg("sync")
        .args(input.cli_source())
        .args([
            "--quiet",
            "--no-state",
            "--dry-run",
            "--no-gzip",
            "--dry-run-dir",
        ])
        .arg(&bodies)
        .output()
        .map_err(|e| e.to_string())?;
    if !cli.status.success() {
        return Err(format!(
            "the dry run failed: {}",
            String::from_utf8_lossy(&cli.stderr)
        ));
    }
    let body = std::fs::read(bodies.join("request-000001.json")).map_err(|e| e.to_string())?;
    let body: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let cli_event = body["batch"][0].clone();
    let floor_event: serde_json::Value =
        serde_json::from_str(floor_event).map_err(|e| format!("floor event: {e}"))?;
    let [floor_event, cli_event] = [floor_event, cli_event].map(|mut event| {
        if let Some(event) = event.as_object_mut() {
            event.remove("messageId");
            event.remove("timestamp");
        }
        event
    });
    if floor_event == cli_event {
        Ok(())
    } else {
        Err(format!(
            "the floor builds {floor_event}\nthe CLI sends {cli_event}"
        ))
    }
}

/// Runs the CLI over `input` as `case`; returns its cost and what it delivered.
fn run_case(
    input: &Subject,
    case: Case,
    dir: &Path,
    control: &Control<'_>,
    failures: &mut Vec<String>,
) -> (Measured, String) {
    let stderr = dir.join("segment-sync.stderr");
    let log = File::create(&stderr).expect("could not create the stderr log");
    let state = tempfile::tempdir_in(dir).expect("could not create a state dir");
    control.reset();
    let run = measure(
        input
            .cli_command(Path::new(BIN), case, state.path())
            .current_dir(dir)
            .env("SEGMENT_HOST", control.url())
            .env_remove("SEGMENT_REGION")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log),
    );
    let (result, complete) = if case.sends() {
        let stats = control.stats();
        (
            format!(
                "{}/{} delivered, {} duplicates",
                grouped(stats.unique_message_ids),
                grouped(input.rows()),
                stats.duplicates
            ),
            stats.accepted == input.rows()
                && stats.unique_message_ids == input.rows()
                && stats.rejected == 0,
        )
    } else {
        (run.ended.clone(), true)
    };
    if !run.success || !complete {
        let log = std::fs::read_to_string(&stderr).unwrap_or_default();
        failures.push(format!(
            "{} {}: {result}, {}; stderr:\n{}",
            input.name(),
            case.describe(),
            run.ended,
            tail(&log, 20)
        ));
    }
    (run, result)
}

fn parse_args(args: &[String]) -> Options {
    let mut options = Options {
        rows: None,
        formats: None,
        cases: Case::ALL.to_vec(),
        keep_inputs: None,
        instructions: false,
        baseline: None,
        pairs: BASELINE_PAIRS,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // cargo passes `--bench` to `harness = false` targets.
            "--bench" => {}
            "--rows" => {
                options.rows = Some(
                    args.next()
                        .and_then(|n| n.replace('_', "").parse().ok())
                        .filter(|&n| n > 0)
                        .unwrap_or_else(|| usage("--rows needs a positive whole number")),
                );
            }
            "--formats" => {
                let list = args
                    .next()
                    .unwrap_or_else(|| usage("--formats needs a list"));
                options.formats = Some(
                    list.split(',')
                        .map(|name| {
                            Kind::from_name(name)
                                .unwrap_or_else(|| usage(&format!("unknown format {name:?}")))
                        })
                        .collect(),
                );
            }
            "--cases" => {
                let list = args.next().unwrap_or_else(|| usage("--cases needs a list"));
                options.cases = list
                    .split(',')
                    .map(|name| {
                        Case::ALL
                            .into_iter()
                            .find(|case| case.name() == name)
                            .unwrap_or_else(|| usage(&format!("unknown case {name:?}")))
                    })
                    .collect();
            }
            "--instructions" => options.instructions = true,
            "--baseline" => {
                let bin = args
                    .next()
                    .unwrap_or_else(|| usage("--baseline needs a segment-sync binary"));
                options.baseline = Some(bin.into());
            }
            "--pairs" => {
                options.pairs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage("--pairs needs a positive whole number"));
            }
            "--keep-inputs" => {
                let dir = args
                    .next()
                    .unwrap_or_else(|| usage("--keep-inputs needs a directory"));
                options.keep_inputs = Some(dir.into());
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    options
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: cargo bench -p segment-sync --bench formats [-- --rows N] \
         [--formats ndjson,json,csv,postgres] [--cases dry,dry-state,send,send-state] \
         [--keep-inputs DIR] [--instructions] [--baseline BIN [--pairs N]]"
    );
    std::process::exit(2)
}
