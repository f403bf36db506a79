//! Error and warning types of the configuration: where a problem was found
//! (file, line, parameter) and what is wrong.
//!
//! Owns only the types. Loading collects every problem into a list of
//! [`Diagnostic`]s instead of stopping at the first (STYLE.md rule 9), so an
//! administrator fixes a broken `main.cf` in one pass.

use std::path::{Path, PathBuf};

/// Where a problem was found: file and line, and the parameter if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in (main.cf, master.cf or a table file).
    pub file: PathBuf,
    /// 1-based line, when the problem is on a line.
    pub line: Option<usize>,
    /// The parameter concerned, when there is one.
    pub param: Option<String>,
    /// What is wrong, lower case, no trailing period.
    pub message: String,
}

impl Diagnostic {
    /// A problem at `file:line`, not tied to one parameter (syntax errors).
    pub fn at(file: &Path, line: usize, message: impl Into<String>) -> Diagnostic {
        Diagnostic { file: file.to_path_buf(), line: Some(line), param: None, message: message.into() }
    }

    /// A problem with parameter `param`, defined at `file:line` (or only in
    /// `file` when `line` is None, e.g. a default value).
    pub fn param(
        file: &Path,
        line: Option<usize>,
        param: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic { file: file.to_path_buf(), line, param: Some(param.into()), message: message.into() }
    }

    /// A problem with a whole file (missing, unreadable).
    pub fn file(file: &Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic { file: file.to_path_buf(), line: None, param: None, message: message.into() }
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(p) = &self.param {
            write!(f, ": {p}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every error found while loading, all at once (STYLE.md rule 9).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} configuration error(s):\n{}", .0.len(), .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<Diagnostic>);

/// A failure inside a lookup table at lookup time (e.g. a table file that
/// vanished is caught at load; this is for run-time failures), or a lookup
/// result that cannot be used (a transport_maps result naming a transport
/// that does not exist). Callers defer the mail, as Postfix does.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{table}: {message}")]
pub struct TableError {
    pub table: String,
    pub message: String,
}

/// Collects errors and warnings during a load; deduplicates, because the
/// same main.cf line is checked once per master.cf service.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl Report {
    pub fn error(&mut self, d: Diagnostic) {
        if !self.errors.contains(&d) {
            self.errors.push(d);
        }
    }

    pub fn warn(&mut self, d: Diagnostic) {
        if !self.warnings.contains(&d) {
            self.warnings.push(d);
        }
    }
}
