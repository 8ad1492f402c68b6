//! Printing an error with its causes, each once: error messages never repeat their source, so
//! whoever shows an error to a person shows the chain.

use std::error::Error;
use std::fmt;

/// An error and its causes (the `source()` chain). `{}` writes one line, `error: cause: cause`
/// (for a panic message); `{:#}` writes the error, then one `  caused by: cause` line per cause
/// (for a terminal).
///
/// ```
/// let io = std::io::Error::other("disk full");
/// let error = aiida::config::ConfigError::Io { action: "write", path: "/x".into(), source: io };
/// assert_eq!(aiida::report::Chain(&error).to_string(), "cannot write /x: disk full");
/// assert_eq!(format!("{:#}", aiida::report::Chain(&error)), "cannot write /x\n  caused by: disk full");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            if f.alternate() {
                write!(f, "\n  caused by: {error}")?;
            } else {
                write!(f, ": {error}")?;
            }
            cause = error.source();
        }
        Ok(())
    }
}
