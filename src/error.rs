//! The public error: one small stable [`ErrorKind`] over a precise detail.
//!
//! Modules describe *where* (file, structure, field, byte offset) and *what*
//! (expected vs found) in their detail; the binary prints the whole thing on
//! one line and maps the kind to an exit code (see [`ErrorKind::exit_code`]).

use std::fmt;
use std::path::{Path, PathBuf};

/// The stable classification of every failure onramp reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Reading or writing a host file failed (disk full, permission, ...).
    Io,
    /// The image contradicts its own format specification.
    Corrupt,
    /// The image is valid but uses something onramp does not handle (yet).
    Unsupported,
    /// The user asked for something impossible (bad flag value, refused backing file, ...).
    InvalidInput,
    /// A validation rule said no.
    Validation,
    /// Handing the image to a remote runtime failed.
    Publish,
}

impl ErrorKind {
    /// Exit code of the CLI for this kind: 1 check said no, 2 bad input, 3 I/O/environment.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Validation => 1,
            ErrorKind::Corrupt | ErrorKind::Unsupported | ErrorKind::InvalidInput => 2,
            ErrorKind::Io | ErrorKind::Publish => 3,
        }
    }

    fn label(self) -> &'static str {
        match self {
            ErrorKind::Io => "I/O error",
            ErrorKind::Corrupt => "corrupt image",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Validation => "validation failed",
            ErrorKind::Publish => "publish failed",
        }
    }
}

/// A structure on disk disagrees with its specification.
///
/// Rendered as `<structure> field <field> at byte <offset>: expected <expected>, found <found>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The on-disk structure, e.g. "qcow2 header" or "L2 table".
    pub structure: String,
    /// The field inside it, named as the spec names it (e.g. `cluster_bits`).
    pub field: String,
    /// Absolute byte offset in the file (or in the virtual disk, when said so).
    pub offset: u64,
    /// What the spec allows.
    pub expected: String,
    /// What the image holds.
    pub found: String,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} field {} at byte {}: expected {}, found {}",
            self.structure, self.field, self.offset, self.expected, self.found
        )
    }
}

/// onramp's public error.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    path: Option<PathBuf>,
    message: String,
    source: Option<std::io::Error>,
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a human message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            path: None,
            message: message.into(),
            source: None,
        }
    }

    /// A corruption: structure, field, byte offset, expected vs found.
    pub fn corrupt(
        structure: impl Into<String>,
        field: impl Into<String>,
        offset: u64,
        expected: impl fmt::Display,
        found: impl fmt::Display,
    ) -> Self {
        let c = Corruption {
            structure: structure.into(),
            field: field.into(),
            offset,
            expected: expected.to_string(),
            found: found.to_string(),
        };
        Error::new(ErrorKind::Corrupt, c.to_string())
    }

    /// A corruption described in free text (when field/expected/found do not fit).
    pub fn corrupt_msg(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Corrupt, message)
    }

    /// Something valid that onramp does not handle.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unsupported, message)
    }

    /// A request that cannot be honoured.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// An I/O failure with context (what was being done).
    pub fn io(context: impl Into<String>, err: std::io::Error) -> Self {
        Error {
            kind: ErrorKind::Io,
            path: None,
            message: context.into(),
            source: Some(err),
        }
    }

    /// Attach the file this error is about, unless one is already attached.
    #[must_use]
    pub fn at(mut self, path: &Path) -> Self {
        if self.path.is_none() {
            self.path = Some(path.to_path_buf());
        }
        self
    }

    /// The stable kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without path or kind label.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The file the error is about, if known.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.path {
            write!(f, "{}: ", p.display())?;
        }
        write!(f, "{}: {}", self.kind.label(), self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Extension to add context to `std::io::Result`.
pub trait IoContext<T> {
    /// Turn an I/O error into an [`Error`] of kind Io with `context`.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
