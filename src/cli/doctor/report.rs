//! One doctor check's result: a verdict, what was found, the fix when not ok, and which modes
//! need it; printed as one line per check (plus its fix) or as JSON.

use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// Who needs what a check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Needed {
    /// Both run modes: a failure makes `sandbox doctor` exit non-zero.
    Both,
    /// VM mode only.
    Vm,
    /// Container mode only.
    Container,
    /// `sandbox lab` (nested KVM under QEMU) only.
    Lab,
    /// Tests and diagnostics only.
    Tests,
}

/// The outcome of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short stable name (`kvm`, `cgroups`, ...).
    pub name: &'static str,
    pub verdict: Verdict,
    /// What was found, in words.
    pub found: String,
    /// What to do about it; absent when ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    pub needed_by: Needed,
    /// Machine-readable details of what was found.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

impl Check {
    pub fn ok(name: &'static str, needed_by: Needed, found: impl Into<String>) -> Self {
        Check {
            name,
            verdict: Verdict::Ok,
            found: found.into(),
            fix: None,
            needed_by,
            data: serde_json::Value::Null,
        }
    }

    pub fn warn(
        name: &'static str,
        needed_by: Needed,
        found: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check {
            verdict: Verdict::Warn,
            fix: Some(fix.into()),
            ..Check::ok(name, needed_by, found)
        }
    }

    pub fn fail(
        name: &'static str,
        needed_by: Needed,
        found: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check {
            verdict: Verdict::Fail,
            fix: Some(fix.into()),
            ..Check::ok(name, needed_by, found)
        }
    }

    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }

    /// The human-readable lines of this check.
    pub fn render(&self) -> String {
        let verdict = match self.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        let needed = match self.needed_by {
            Needed::Both => "",
            Needed::Vm => " [vm]",
            Needed::Container => " [container]",
            Needed::Lab => " [lab]",
            Needed::Tests => " [tests]",
        };
        let mut out = format!("{verdict}  {:<13} {}{needed}", self.name, self.found);
        if let Some(fix) = &self.fix {
            out.push_str(&format!("\n      {:<13} fix: {fix}", ""));
        }
        out
    }
}

/// The process exit status for a set of checks: 1 if a check both modes need failed.
pub fn exit_status(checks: &[Check]) -> i32 {
    let blocking = checks
        .iter()
        .any(|c| c.verdict == Verdict::Fail && c.needed_by == Needed::Both);
    i32::from(blocking)
}
