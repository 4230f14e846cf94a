//! Security groups: the rule language and everything between a rules file and the maps.
//!
//! Stages, as ripgrep separates raw and resolved arguments:
//! 1. [`syntax`]: `toml_front` (native) and `aws` (describe-security-groups JSON) read a file into the
//!    same located, unchecked [`raw`] form. Syntax errors carry file:line:column.
//! 2. [`validate`]: raw -> checked [`RuleSet`] (protocols, ports, CIDRs, references, quotas);
//!    every problem is reported with file:line:column, and one problem rejects the whole file.
//! 3. [`compile`]: a pure function from a `RuleSet` to one [`compile::IfacePlan`] per interface:
//!    prefix entries as [`prefix_table`]s, and port-set segments, ready for the maps.
//!
//! [`model`] holds the checked types of both layers and the reference semantics (evaluate a
//! packet against a `RuleSet`): it backs `sgctl explain` and the differential tests that hold
//! the datapath to it. [`tools`] is what operators do with a checked rule set (audit, diff,
//! edit, export).

pub mod compile;
pub mod model;
pub mod syntax;
pub mod tools;
pub mod validate;

// The paths every user knows, kept: `rules::audit`, `rules::aws`, `rules::RuleSet`, ...
pub use compile::prefix_table;
pub use model::{acl, key, types::*};
pub use syntax::{aws, raw, toml_front};
pub use tools::{audit, aws_export, diff, edit, learn, nft, toml_out};

use std::{fmt, path::Path};

use serde::{Deserialize, Serialize};

/// Where something was written: file, line and column (1-based).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Loc {
    pub file: String,
    pub line: usize,
    pub col: usize,
}

impl Loc {
    /// The location of byte `offset` in `text` (for one-off use; see [`LineIndex`]).
    pub fn at(file: &str, text: &str, offset: usize) -> Loc {
        LineIndex::new(text).loc(file, text, offset)
    }
}

/// Byte offsets of line starts, to turn many offsets of one text into locations quickly.
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    /// Line and column (1-based, column in characters) of byte `offset`.
    pub fn loc(&self, file: &str, text: &str, offset: usize) -> Loc {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        Loc { file: file.to_string(), line, col: text[start..offset].chars().count() + 1 }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// One problem in a rules file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub loc: Loc,
    pub msg: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.loc, self.msg)
    }
}

/// Every problem found in a rules file (never empty). The file is rejected whole.
#[derive(Clone, Debug, thiserror::Error)]
pub struct RuleErrors(pub Vec<Diagnostic>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl RuleErrors {
    pub fn one(loc: Loc, msg: impl Into<String>) -> Self {
        RuleErrors(vec![Diagnostic { loc, msg: msg.into() }])
    }
}

/// Panics unless `errs` is what a rejected file must produce: at least one message, each one
/// line, each with a line and column (the fuzz targets' check).
pub fn check_diagnostics(errs: &RuleErrors) {
    assert!(!errs.0.is_empty(), "a rejection without a message");
    for d in &errs.0 {
        assert!(d.loc.line >= 1 && d.loc.col >= 1, "no line:column in `{d}`");
        assert!(!d.msg.trim().is_empty(), "empty message at {}", d.loc);
        assert!(!d.msg.contains('\n'), "multi-line message: `{d}`");
    }
}

/// Input formats of a rules file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// sgctl's TOML.
    Toml,
    /// `aws ec2 describe-security-groups` JSON.
    Aws,
}

/// One `--bind IFACE=NAME[,NAME...]`: an interface and the groups (GroupId or GroupName) and
/// network ACL (its NetworkAclId) AWS JSON binds to it. Parsed where it is given (the CLI);
/// the names are resolved against the groups in validation (`validate::resolve_group`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsBinding {
    pub iface: String,
    pub names: Vec<String>,
}

impl std::str::FromStr for AwsBinding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (iface, names) =
            s.split_once('=').ok_or_else(|| format!("'{s}': write IFACE=GROUP[,GROUP...]"))?;
        let names: Vec<String> =
            names.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect();
        if iface.trim().is_empty() || names.is_empty() {
            return Err(format!("'{s}': write IFACE=GROUP[,GROUP...] (an interface and at least one group)"));
        }
        Ok(AwsBinding { iface: iface.trim().to_string(), names })
    }
}

impl fmt::Display for AwsBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.iface, self.names.join(","))
    }
}

/// Extra input for AWS JSON, which has no interfaces, members or prefix-list entries.
#[derive(Clone, Debug, Default)]
pub struct AwsContext {
    /// `--bind IFACE=GROUP[,GROUP...]` bindings (GroupId or GroupName; an `acl-` id of a
    /// `network_acls` input binds that network ACL).
    pub bindings: Vec<AwsBinding>,
    /// TOML file with `[groups.<id or name>] members = [...]` and `[prefix_lists.<id>]`:
    /// (file name, text).
    pub members: Option<(String, String)>,
    /// `describe-network-interfaces` outputs: (file name, text).
    pub network_interfaces: Vec<(String, String)>,
    /// `describe-network-acls` outputs: (file name, text).
    pub network_acls: Vec<(String, String)>,
    /// `describe-prefix-lists` / `get-managed-prefix-list-entries` outputs.
    pub prefix_lists: Vec<aws::PrefixListInput>,
}

/// A checked rule set and what its front end accepted with a warning (AWS JSON only).
#[derive(Debug)]
pub struct Loaded {
    pub rules: RuleSet,
    pub warnings: Vec<Diagnostic>,
}

/// Reads, parses and validates a rules file; warnings are logged.
pub fn load(path: &Path, format: Format, aws: &AwsContext) -> Result<RuleSet, RuleErrors> {
    Ok(logged(load_with_warnings(path, format, aws)?))
}

/// Reads, parses and validates a rules file, with its warnings.
pub fn load_with_warnings(path: &Path, format: Format, aws: &AwsContext) -> Result<Loaded, RuleErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        RuleErrors::one(Loc { file: name.clone(), line: 0, col: 0 }, format!("cannot read: {e}"))
    })?;
    parse_with_warnings(&name, &text, format, aws)
}

/// Parses and validates rules from text (`name` is used in messages); warnings are logged.
pub fn parse_str(name: &str, text: &str, format: Format, aws: &AwsContext) -> Result<RuleSet, RuleErrors> {
    Ok(logged(parse_with_warnings(name, text, format, aws)?))
}

/// Parses and validates rules from text, with their warnings. A file with errors is rejected
/// whole; warnings never reject.
pub fn parse_with_warnings(
    name: &str,
    text: &str,
    format: Format,
    aws: &AwsContext,
) -> Result<Loaded, RuleErrors> {
    let mut raw = match format {
        Format::Toml => toml_front::parse(name, text)?,
        Format::Aws => aws::parse(name, text, aws)?,
    };
    let warnings = std::mem::take(&mut raw.warnings);
    Ok(Loaded { rules: validate::validate(&raw)?, warnings })
}

fn logged(l: Loaded) -> RuleSet {
    for w in &l.warnings {
        log::warn!("{w}");
    }
    l.rules
}

#[cfg(test)]
mod tests;
