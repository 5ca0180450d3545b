//! Running a child process and measuring exactly what it alone cost.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// What one child process cost and how it ended.
pub struct Measured {
    pub wall: Duration,
    pub cpu_seconds: f64,
    pub peak_rss_kb: u64,
    /// `exit N`, or `signal N` if it was killed.
    pub ended: String,
    pub success: bool,
}

impl Measured {
    pub fn peak_mb(&self) -> f64 {
        self.peak_rss_kb as f64 / 1024.0
    }
}

/// Spawns `command` and waits for it, measuring wall time, CPU and peak RSS.
pub fn measure(command: &mut Command) -> Measured {
    let started = Instant::now();
    let child = command.spawn().expect("could not start the process");
    let waited = wait_with_usage(child);
    Measured {
        wall: started.elapsed(),
        cpu_seconds: seconds(waited.usage.ru_utime) + seconds(waited.usage.ru_stime),
        // Linux reports ru_maxrss in kilobytes.
        peak_rss_kb: u64::try_from(waited.usage.ru_maxrss).unwrap_or(0),
        ended: describe_status(waited.status),
        success: libc::WIFEXITED(waited.status) && libc::WEXITSTATUS(waited.status) == 0,
    }
}

struct Waited {
    status: libc::c_int,
    usage: libc::rusage,
}

/// Reaps `child` with `wait4`, which gives that one process's exact CPU times
/// and peak RSS (`getrusage(RUSAGE_CHILDREN)` would mix in every child reaped
/// so far). Takes the `Child`, which must not be waited for again.
#[allow(unsafe_code)]
fn wait_with_usage(child: Child) -> Waited {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain integers, for which all-zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live, writable locals of the right
        // types; `pid` is our own unreaped child, which `Child` never waits
        // for on drop.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            return Waited { status, usage };
        }
        let error = std::io::Error::last_os_error();
        assert!(
            error.kind() == std::io::ErrorKind::Interrupted,
            "wait4 failed: {error}"
        );
    }
}

fn seconds(time: libc::timeval) -> f64 {
    time.tv_sec as f64 + time.tv_usec as f64 / 1e6
}

fn describe_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let head = match digits.len() % 3 {
        0 => 3,
        short => short,
    };
    let (head, rest) = digits.split_at(head);
    let mut out = head.to_owned();
    for group in rest.as_bytes().chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).expect("digits are ASCII"));
    }
    out
}

pub fn megabytes(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}
