//! Counting the bytes a source has consumed, for progress bars.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A cheap, clonable handle on how many bytes a [`Source`](super::Source)
/// has read so far; another thread (a progress bar) may poll it.
///
/// The count is of bytes taken from the underlying file or reader, so it runs
/// ahead of the records yielded by at most one read buffer (64 KiB), and it
/// reaches [`Source::total_bytes`](super::Source::total_bytes) once the
/// source is exhausted.
#[derive(Clone, Debug, Default)]
pub struct ReadProgress {
    bytes: Arc<AtomicU64>,
}

impl ReadProgress {
    /// Bytes consumed from the underlying reader so far.
    pub fn bytes_read(&self) -> u64 {
        // Relaxed: the value is a display hint and orders nothing else.
        self.bytes.load(Ordering::Relaxed)
    }
}

/// A reader that adds every byte it reads to a [`ReadProgress`].
pub(super) struct CountingReader<R> {
    inner: R,
    progress: ReadProgress,
}

impl<R: Read> CountingReader<R> {
    pub(super) fn new(inner: R, progress: ReadProgress) -> Self {
        Self { inner, progress }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        // One atomic add per buffer fill (64 KiB), not per record.
        self.progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_byte_read() {
        let progress = ReadProgress::default();
        let mut reader = CountingReader::new(&b"hello, world"[..], progress.clone());
        let mut first = [0u8; 5];
        reader.read_exact(&mut first).unwrap();
        assert_eq!(progress.bytes_read(), 5);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(progress.bytes_read(), 12);
    }
}
