//! The crate's one error type.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a receiver could not start or stopped with an error.
///
/// Opaque on purpose: match on [`Display`](std::fmt::Display) for humans and use
/// [`source()`](std::error::Error::source) for the underlying I/O error.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ReceiverError(Box<Kind>);

#[derive(Debug, thiserror::Error)]
enum Kind {
    #[error("failed to bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("failed to read the listener's local address")]
    LocalAddr(#[source] io::Error),
    #[error("failed to open save file {}", path.display())]
    OpenSaveFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to flush save file")]
    FlushSaveFile(#[source] io::Error),
    #[error("receiver server failed")]
    Serve(#[source] io::Error),
}

impl ReceiverError {
    pub(crate) fn bind(addr: SocketAddr, source: io::Error) -> Self {
        Self(Box::new(Kind::Bind { addr, source }))
    }

    pub(crate) fn local_addr(source: io::Error) -> Self {
        Self(Box::new(Kind::LocalAddr(source)))
    }

    pub(crate) fn open_save_file(path: PathBuf, source: io::Error) -> Self {
        Self(Box::new(Kind::OpenSaveFile { path, source }))
    }

    pub(crate) fn flush_save_file(source: io::Error) -> Self {
        Self(Box::new(Kind::FlushSaveFile(source)))
    }

    pub(crate) fn serve(source: io::Error) -> Self {
        Self(Box::new(Kind::Serve(source)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn is_send_sync_and_static() {
        fn assert_bounds<T: Send + Sync + 'static>() {}
        assert_bounds::<ReceiverError>();
    }

    #[test]
    fn display_is_short_and_source_is_the_io_error() {
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        let err = ReceiverError::bind(addr, io::Error::from(io::ErrorKind::AddrInUse));
        assert_eq!(err.to_string(), "failed to bind 127.0.0.1:0");
        let source = err.source().expect("a bind error has a source");
        assert!(source.downcast_ref::<io::Error>().is_some());
    }
}
