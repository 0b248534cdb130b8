//! Where commands write. Shared by `commands` and `events` (and anything else that prints), so
//! neither imports the other's internals.

use std::io::Write;

use crate::error::CtlError;

/// Where commands write: results to `out`, warnings to `err`.
pub struct Io<'a> {
    /// Results.
    pub out: &'a mut dyn Write,
    /// Warnings.
    pub err: &'a mut dyn Write,
}

/// Writes `text` to the results stream and flushes it, so a reader sees it at once.
pub fn print(io: &mut Io<'_>, text: &str) -> Result<(), CtlError> {
    io.out.write_all(text.as_bytes())?;
    io.out.flush()?;
    Ok(())
}
