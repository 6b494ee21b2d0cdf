//! Configuration input: files in, Envoy v3 resources out.
//!
//! ```text
//! weft.yaml (friendly) --friendly + compile--> Resources --snapshot::translate--> Snapshot
//! Envoy YAML/JSON -------envoy_format-------->
//! ```
//!
//! This module reads and parses; [`crate::snapshot::translate`] validates the resources
//! and builds the snapshot. Every problem found is reported with its place: a YAML path
//! and line for friendly files, a resource name and field for Envoy resources.

pub mod compile;
pub mod envoy_format;
pub mod friendly;
pub mod locate;
pub mod resources;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use self::resources::Resources;
use crate::snapshot::{self, Snapshot};

/// The default admin address (Envoy's convention).
pub const DEFAULT_ADMIN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9901,
));

/// One thing wrong with a configuration, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// YAML path (`listeners[0].routes[2].to`) or resource place
    /// (`Listener "edge" filter_chains[0]`).
    pub place: String,
    /// 1-based line and column in the file, when known.
    pub line: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem at `place`.
    pub fn new(place: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            place: place.into(),
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, col)) = self.line {
            write!(f, "{line}:{col}: ")?;
        }
        if self.place.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.place, self.message)
        }
    }
}

/// Why a configuration was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration has problems; all that were found are listed.
    #[error("{origin}: {} problem{}:\n{}", problems.len(), if problems.len() == 1 { "" } else { "s" }, ListProblems(origin, problems))]
    Invalid {
        /// File name or other origin, for messages.
        origin: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The individual problems (empty for I/O errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Io { .. } => &[],
            Self::Invalid { problems, .. } => problems,
        }
    }
}

struct ListProblems<'a>(&'a str, &'a [Problem]);

impl fmt::Display for ListProblems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.1.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.line.is_some() {
                write!(f, "  {}:{p}", self.0)?;
            } else {
                write!(f, "  {p}")?;
            }
        }
        Ok(())
    }
}

/// A configuration that passed every check.
#[derive(Debug)]
pub struct Loaded {
    /// The Envoy resources (what `/config_dump` shows).
    pub resources: Resources,
    /// The snapshot built from them.
    pub snapshot: Snapshot,
    /// The admin address the file asked for, if any.
    pub admin: Option<SocketAddr>,
}

/// Reads, compiles and validates the file at `path`.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    load_str(&text, &path.display().to_string())
}

/// Compiles and validates configuration text; `origin` names it in messages.
///
/// Envoy-format text (a bootstrap with `static_resources`, or a `resources` list) is
/// recognised by its top-level keys; anything else is read as a friendly `weft.yaml`.
pub fn load_str(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
    let invalid = |problems: Vec<Problem>| ConfigError::Invalid {
        origin: origin.to_owned(),
        problems,
    };
    let (resources, admin) = if envoy_format::looks_like_envoy(text) {
        envoy_format::parse(text).map_err(invalid)?
    } else {
        let file = friendly_from_str(text).map_err(invalid)?;
        compile::compile(&file).map_err(|ps| invalid(locate::locate_all(text, ps)))?
    };
    let snapshot = snapshot::translate(&resources).map_err(invalid)?;
    Ok(Loaded {
        resources,
        snapshot,
        admin,
    })
}

/// Parses friendly YAML; syntax, type and unknown-field errors carry their line.
pub fn friendly_from_str(text: &str) -> Result<friendly::File, Vec<Problem>> {
    if text.trim().is_empty() {
        return Ok(friendly::File::default());
    }
    serde_saphyr::from_str::<friendly::File>(text).map_err(|e| vec![yaml_problem(&e)])
}

fn yaml_problem(e: &serde_saphyr::Error) -> Problem {
    let line = e
        .location()
        .filter(|l| l.line() > 0)
        .map(|l| (l.line() as usize, l.column() as usize));
    let message = e.to_string();
    // serde-saphyr appends a source snippet after the first line, and starts that line
    // with "error: line L column C: ", which the problem already carries.
    let first = message.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let message = match first.split_once(": ") {
        Some((loc, rest)) if loc.starts_with("line ") && loc.contains(" column ") => {
            rest.to_owned()
        }
        _ => first.to_owned(),
    };
    Problem {
        place: String::new(),
        line,
        message,
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
