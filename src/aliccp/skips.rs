//! Bad-input policy: every reason a row or feature can be skipped (or merely noted), the
//! per-reason counters, and the first issue of a chunk for `--strict`.

use std::collections::BTreeMap;

/// What happens to the unit a reason applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The row is dropped.
    SkipRow,
    /// One feature is dropped, the row is kept.
    SkipFeature,
    /// Bad input that does not lose data (the row is kept as parsed).
    Note,
    /// Valid input, counted for the report; never an error.
    Valid,
}

macro_rules! reasons {
    ($($variant:ident => $name:literal, $effect:ident, $doc:literal;)*) => {
        /// Why a unit of input was skipped or noted. Names are the manifest keys.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Reason { $(#[doc = $doc] $variant,)* }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];
            pub fn name(self) -> &'static str { match self { $(Reason::$variant => $name,)* } }
            pub fn effect(self) -> Effect { match self { $(Reason::$variant => Effect::$effect,)* } }
            pub fn describe(self) -> &'static str { match self { $(Reason::$variant => $doc,)* } }
        }
    };
}

reasons! {
    BlankLine => "blank_line", SkipRow, "empty line";
    HeaderLine => "header_line", SkipRow, "header line (first column is a name, not a value)";
    WrongColumnCount => "wrong_column_count", SkipRow, "wrong number of comma-separated columns";
    BadSampleId => "bad_sample_id", SkipRow, "sample_id is not an unsigned integer";
    BadLabel => "bad_label", SkipRow, "click or buy is not 0 or 1";
    BadMd5 => "bad_md5", SkipRow, "md5 is not 16 hexadecimal characters";
    EmptyFeatureList => "empty_feature_list", SkipRow, "empty feature list";
    TruncatedLastLine => "truncated_last_line", SkipRow, "last line cut short (no newline and malformed)";
    MissingCommonRow => "missing_common_row", SkipRow, "md5 has no row in the common features file of this split";
    DuplicateSampleId => "duplicate_sample_id", SkipRow, "sample_id seen before in this split (first kept)";
    DuplicateCommonMd5 => "duplicate_common_md5", SkipRow, "md5 seen before in the common features file (first kept)";
    EmptyFeature => "empty_feature", SkipFeature, "empty feature (doubled or trailing \\x01)";
    MalformedToken => "malformed_token", SkipFeature, "feature not of the form field\\x02id\\x03value";
    UnknownField => "unknown_field", SkipFeature, "field id outside the 23 contract fields";
    MisplacedField => "misplaced_field", SkipFeature, "field of the other file (user field in a skeleton line or item field in a common line)";
    IdOverflow => "id_overflow", SkipFeature, "feature id does not fit in u64";
    BadValue => "bad_value", SkipFeature, "value is not a finite number";
    FeatureNumMismatch => "feature_num_mismatch", Note, "feature_num disagrees with the parsed list (the list is trusted)";
    ClickNoBuyOne => "click0_buy1", Valid, "click=0,buy=1 row (a CTCVR negative, never a CVR positive)";
    FieldCapped => "field_capped", Valid, "feature dropped by ingest.max_ids_per_field";
    NoUserId => "common_rows_without_101", Valid, "common row without the user id field 101";
}

impl Reason {
    /// Fails the stage under `--strict`.
    pub fn is_error(self) -> bool {
        matches!(self.effect(), Effect::SkipRow | Effect::SkipFeature | Effect::Note)
    }
}

/// The first strict-mode failure of a chunk: 1-based line number, reason, detail.
#[derive(Clone, Debug)]
pub struct Issue {
    pub line: u64,
    pub reason: Reason,
    pub detail: String,
}

impl Issue {
    pub fn message(&self, file: &str) -> String {
        format!("{file}:{}: {}: {} ({})", self.line, self.reason.name(), self.reason.describe(), self.detail)
    }
}

/// Per-reason counters, plus the first error-class issue seen (the strict-mode failure).
#[derive(Clone, Debug, Default)]
pub struct Notes {
    counts: [u64; REASONS],
    pub first_issue: Option<Issue>,
}

const REASONS: usize = Reason::ALL.len();

impl Notes {
    /// Counts one occurrence; `detail` is evaluated only for the first error-class issue.
    #[inline]
    pub fn add(&mut self, line: u64, reason: Reason, detail: impl FnOnce() -> String) {
        self.counts[reason as usize] += 1;
        if self.first_issue.is_none() && reason.is_error() {
            self.first_issue = Some(Issue { line, reason, detail: detail() });
        }
    }

    pub fn count(&self, reason: Reason) -> u64 {
        self.counts[reason as usize]
    }

    /// True if nothing error-class was noted.
    pub fn clean(&self) -> bool {
        self.first_issue.is_none()
    }

    pub fn merge(&mut self, other: &Notes) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        if self.first_issue.is_none() {
            self.first_issue.clone_from(&other.first_issue);
        }
    }

    /// Rows dropped for any reason.
    pub fn rows_skipped(&self) -> u64 {
        Reason::ALL.iter().filter(|r| r.effect() == Effect::SkipRow).map(|&r| self.count(r)).sum()
    }

    /// Non-zero counters by name, prefixed (e.g. `train.skeleton.`), for the manifest.
    pub fn to_map(&self, prefix: &str, out: &mut BTreeMap<String, u64>) {
        for &r in Reason::ALL {
            if self.count(r) > 0 {
                *out.entry(format!("{prefix}{}", r.name())).or_default() += self.count(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_error_is_kept_and_valid_reasons_are_not_errors() {
        let mut n = Notes::default();
        n.add(3, Reason::ClickNoBuyOne, || unreachable!());
        assert!(n.clean());
        n.add(5, Reason::BadValue, || "value `nan`".into());
        n.add(9, Reason::BadLabel, || unreachable!());
        assert_eq!(n.first_issue.as_ref().map(|i| i.line), Some(5));
        assert_eq!(n.rows_skipped(), 1);
        let mut m = BTreeMap::new();
        n.to_map("train.", &mut m);
        assert_eq!(m.get("train.bad_value"), Some(&1));
        assert_eq!(m.get("train.click0_buy1"), Some(&1));
        assert!(n.first_issue.unwrap().message("f.csv").starts_with("f.csv:5: bad_value"));
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = Reason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len());
    }
}
