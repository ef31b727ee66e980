//! Environment-first configuration: each service describes its settings by name, this
//! crate reads them from a source (the process environment, or a map in tests), and
//! collects every problem instead of stopping at the first, so an operator fixes a bad
//! deployment in one round.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// Every problem found, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Exit status for bad configuration (EX_USAGE).
pub const EXIT_USAGE: i32 = 64;

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Reads named settings from a source, remembering every problem and every name asked.
pub struct Settings {
    vars: HashMap<String, String>,
    problems: Vec<String>,
    warnings: Vec<String>,
    asked: Arc<Mutex<BTreeSet<String>>>,
}

/// Which of a source's names a configuration read (see [`Settings::reads`]).
pub struct Reads {
    names: Vec<String>,
    asked: Arc<Mutex<BTreeSet<String>>>,
}

impl Reads {
    /// The source's names never asked for, sorted: typos, or settings of another
    /// service or of a mode not chosen.
    pub fn unread(&self) -> Vec<String> {
        let asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        let mut unread: Vec<String> = self.names.iter().filter(|n| !asked.contains(*n)).cloned().collect();
        unread.sort();
        unread
    }
}

impl Settings {
    /// The process environment.
    pub fn from_env() -> Self {
        Self::from_source(std::env::vars())
    }

    /// Any set of name/value pairs (tests pass a map).
    pub fn from_source(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        Self { vars: vars.into_iter().collect(), problems: Vec::new(), warnings: Vec::new(), asked: Arc::default() }
    }

    /// A handle that tells, once the settings have been read, which names were not.
    pub fn reads(&self) -> Reads {
        Reads { names: self.vars.keys().cloned().collect(), asked: self.asked.clone() }
    }

    /// Literal pairs (tests).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self::from_source(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    /// The settings whose names `keep` selects, as a source of their own (one service's
    /// settings that another embeds); here they count as read.
    pub fn subset(&self, keep: impl Fn(&str) -> bool) -> Settings {
        let vars: Vec<(String, String)> =
            self.vars.iter().filter(|(name, _)| keep(name)).map(|(n, v)| (n.clone(), v.clone())).collect();
        self.asked.lock().unwrap_or_else(|e| e.into_inner()).extend(vars.iter().map(|(name, _)| name.clone()));
        Settings::from_source(vars)
    }

    /// The same settings with `name` set to `value`.
    pub fn with(mut self, name: &str, value: &str) -> Settings {
        self.vars.insert(name.to_owned(), value.to_owned());
        self
    }

    /// A non-empty string, if set.
    pub fn string(&self, name: &str) -> Option<String> {
        self.asked.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned());
        self.vars.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    /// A secret: the variable's value, or else the contents (trimmed) of the file that
    /// `<name>_FILE` names, as Docker and Kubernetes mount secrets. A file that cannot
    /// be read is a problem.
    pub fn secret(&mut self, name: &str) -> Option<Secret> {
        if let Some(value) = self.string(name) {
            return Some(Secret::new(value));
        }
        let file_name = format!("{name}_FILE");
        let path = self.string(&file_name)?;
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.trim().to_owned()).filter(|t| !t.is_empty()).map(Secret::new),
            Err(e) => {
                self.problems.push(format!("{file_name}={path:?}: {e}"));
                None
            }
        }
    }

    /// A parsed value, or `default` when unset. A value that does not parse is a problem.
    pub fn parse<T: FromStr>(&mut self, name: &str, default: T) -> T
    where
        T::Err: fmt::Display,
    {
        match self.string(name) {
            None => default,
            Some(raw) => match raw.parse() {
                Ok(v) => v,
                Err(e) => {
                    self.problems.push(format!("{name}={raw:?}: {e}"));
                    default
                }
            },
        }
    }

    /// Like [`Settings::parse`], and the value must lie in `min..=max`.
    pub fn ranged<T>(&mut self, name: &str, default: T, min: T, max: T) -> T
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
        T::Err: fmt::Display,
    {
        let v = self.parse(name, default);
        if v < min || v > max {
            self.problems.push(format!("{name}={v}: must be between {min} and {max}"));
            return default;
        }
        v
    }

    /// Records a problem found by the caller's own validation.
    pub fn problem(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    /// Something the service starts with but logs loudly (a weak secret it accepts).
    pub fn warning(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }

    /// The warnings so far, for the service to log once it has a logger.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Ok if nothing was wrong.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: self.problems })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_pairs(pairs)
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let mut s = settings(&[("PORT", "eighty"), ("LIMIT", "0")]);
        let port: u16 = s.parse("PORT", 8080);
        let limit: u32 = s.ranged("LIMIT", 10, 1, 100);
        assert_eq!((port, limit), (8080, 10));
        let err = s.finish().unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(err.to_string().contains("PORT=\"eighty\""));
        assert!(err.to_string().contains("LIMIT=0: must be between 1 and 100"));
    }

    #[test]
    fn unset_and_blank_values_take_the_default() {
        let mut s = settings(&[("A", "  ")]);
        assert_eq!(s.parse("A", 5u8), 5);
        assert_eq!(s.parse("B", 6u8), 6);
        assert!(s.finish().is_ok());
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_secret_may_come_from_the_file_its_file_variable_names() {
        let path = std::env::temp_dir().join(format!("config-secret-{}", std::process::id()));
        std::fs::write(&path, "from-the-file\n").unwrap();
        let file = path.to_str().unwrap();
        let mut s = settings(&[("A_FILE", file), ("B", "direct"), ("B_FILE", file), ("C_FILE", "/nonexistent/x")]);
        assert_eq!(s.secret("A").map(|a| a.expose().to_owned()).as_deref(), Some("from-the-file"));
        assert_eq!(s.secret("B").map(|b| b.expose().to_owned()).as_deref(), Some("direct"), "the variable wins");
        assert!(s.secret("C").is_none());
        let err = s.finish().unwrap_err();
        assert!(err.to_string().contains("C_FILE=\"/nonexistent/x\""), "{err}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_subset_is_a_source_of_its_own_and_counts_as_read() {
        let s = settings(&[("TURN_SECRET", "x"), ("TURN_REALM", "r"), ("PORT", "1")]);
        let reads = s.reads();
        let sub = s.subset(|name| name.starts_with("TURN_")).with("TURN_STATS", "false");
        assert_eq!(sub.string("TURN_SECRET").as_deref(), Some("x"));
        assert_eq!(sub.string("TURN_STATS").as_deref(), Some("false"));
        assert_eq!(sub.string("PORT"), None);
        assert_eq!(reads.unread(), vec!["PORT".to_owned()]);
    }

    #[test]
    fn names_never_read_are_listed() {
        let s = settings(&[("PORT", "8080"), ("PROT", "1"), ("LOG_FORMAT", "json")]);
        let reads = s.reads();
        assert_eq!(s.string("PORT").as_deref(), Some("8080"));
        let _ = s.string("LOG_FORMAT");
        let _ = s.string("UNSET");
        assert_eq!(reads.unread(), vec!["PROT".to_owned()]);
    }
}
