//! Writing results to standard output: a closed pipe (`sd info x.png | head -1`) ends the
//! command quietly, a full device is a one-line error, and neither panics as `println!` does.

use std::io::Write;
use std::path::PathBuf;

use sd_core::{Error, Result};

/// What errors on standard output name as their "file".
const STDOUT: &str = "standard output";

/// Write `text` to standard output and flush it.
pub fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| Error::Io {
            path: PathBuf::from(STDOUT),
            source,
        })
}

/// Whether `error` is standard output's reader having gone away: nothing left to tell it.
pub fn is_closed_pipe(error: &Error) -> bool {
    matches!(error, Error::Io { path, source }
        if path.as_os_str() == STDOUT && source.kind() == std::io::ErrorKind::BrokenPipe)
}
