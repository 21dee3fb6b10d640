//! Per-tensor choices from a rules file: an ordered list of tensor-name globs (or regexes),
//! each mapping to a method's settings or to `skip`; the first match wins.
//!
//! ```toml
//! [[rule]]
//! pattern = "*.embed_tokens.weight"   # a glob over the whole name
//! skip = true
//!
//! [[rule]]
//! regex = 'layers\.\d+\.mlp\.'         # or a regex (searched in the name)
//! scheme = "int4"
//! granularity = "group:128"
//! calib = "mse"
//! ```
//!
//! Settings a rule leaves out come from the command line's defaults. A rule changes only the
//! tensors the defaults would quantize: 1-D tensors (norms, biases) only with
//! `include_1d = true`.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::quant::spec::MethodArgs;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<RuleEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    pattern: Option<String>,
    regex: Option<String>,
    #[serde(default)]
    skip: bool,
    #[serde(default)]
    include_1d: bool,
    #[serde(flatten)]
    args: MethodArgs,
}

#[derive(Debug)]
enum Matcher {
    Glob(globset::GlobMatcher),
    Regex(regex::Regex),
}

/// One rule: which names it matches and what it says.
#[derive(Debug)]
pub struct Rule {
    /// Position in the file, from 1.
    pub index: usize,
    /// The pattern as written.
    pub source: String,
    matcher: Matcher,
    /// Leave matching tensors as they are.
    pub skip: bool,
    /// Also change matching 1-D tensors (norms, biases), which a rule otherwise leaves as
    /// the defaults do.
    pub include_1d: bool,
    /// Settings for matching tensors.
    pub args: MethodArgs,
}

impl Rule {
    /// Whether the rule matches a tensor name.
    pub fn matches(&self, name: &str) -> bool {
        match &self.matcher {
            Matcher::Glob(g) => g.is_match(name),
            Matcher::Regex(r) => r.is_match(name),
        }
    }
}

/// An ordered rule list.
#[derive(Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Parses rules from TOML text; errors name `path` and the rule.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let bad = |msg: String| Error::Format {
            path: path.into(),
            msg,
        };
        let file: RulesFile = toml::from_str(text).map_err(|e| bad(e.message().to_string()))?;
        let mut rules = Vec::new();
        for (i, entry) in file.rule.into_iter().enumerate() {
            let index = i + 1;
            let (source, matcher) = match (entry.pattern, entry.regex) {
                (Some(p), None) => {
                    let glob = globset::GlobBuilder::new(&p)
                        .literal_separator(false)
                        .build()
                        .map_err(|e| bad(format!("rule {index}: glob '{p}': {e}")))?;
                    (p, Matcher::Glob(glob.compile_matcher()))
                }
                (None, Some(r)) => {
                    let re = regex::Regex::new(&r)
                        .map_err(|e| bad(format!("rule {index}: regex '{r}': {e}")))?;
                    (r, Matcher::Regex(re))
                }
                _ => {
                    return Err(bad(format!(
                        "rule {index} needs exactly one of 'pattern' or 'regex'"
                    )));
                }
            };
            if entry.skip && entry.args != MethodArgs::default() {
                return Err(bad(format!(
                    "rule {index} ('{source}') both skips and sets a method"
                )));
            }
            rules.push(Rule {
                index,
                source,
                matcher,
                skip: entry.skip,
                include_1d: entry.include_1d,
                args: entry.args,
            });
        }
        Ok(Self { rules })
    }

    /// Reads and parses a rules file.
    pub fn load(path: &Path) -> Result<Self> {
        super::output::check_input(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, &text)
    }

    /// The first rule matching `name`.
    pub fn first_match(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(name))
    }

    /// The rules in order.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}
