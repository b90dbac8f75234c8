//! Id admission and per-field shared rows: which hashed ids get an embedding row of their own.
//!
//! With admission on (`min_sessions > 0`) every field has one shared row, appended after the
//! hash buckets, and an id's embedding is the field's shared row plus, when the id was seen in
//! at least `min_sessions` training sessions (distinct common rows), a row of its own:
//! `pooled_f = Σ_admitted w_k·e_k + (Σ_all w_k)·e_shared(f)`. The shared row learns what the
//! field says on average, weighted by the ids' values, from every row that has the field (a
//! cross feature's count value, say, whatever the crossed ids); own rows learn deviations from
//! it. Rare ids are where an ID-embedding model memorizes (an id seen in a handful of sessions
//! learns those sessions' clicks, and a second epoch then loses on unseen data): they read only
//! the shared row. Ids never seen in training (valid, test, serving) read it too, instead of an
//! untrained random vector.
//!
//! Counting is by session, not by row: the rows of a session share their user and context, so
//! a row count overstates how many independent observations back an id. Item-side ids are
//! counted once per run of rows with the same common row (sessions are contiguous in the split
//! files; an interleaved session only counts more than once).

use std::path::Path;

use anyhow::{ensure, Result};

use crate::batches::{self, Batch, CommonTable, FieldCsr, LoaderConfig, ShuffleUnit};
use crate::schema::FIELDS;

/// The admitted ids of a table of `buckets` rows; field `f`'s shared row is `buckets + f`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Vocab {
    /// 0 = admission off: every id is its own row.
    min_sessions: u32,
    buckets: u32,
    /// Bit `id` set = admitted.
    admitted: Vec<u64>,
    /// Shrinkage (`shrink_sessions = k > 0`): per bucket, the weight `n / (n + k)` of an
    /// admitted id's own row (`n` = its training sessions), so rarely seen ids stay near their
    /// field's shared row and learn away from it more slowly; empty = weight 1.
    scale: Vec<f32>,
}

/// Sessions per id: `last[id]` is 1 + the session that counted `id` last (0 = none yet), so an
/// id repeated within a session counts once.
struct SessionCounts {
    counts: Vec<u32>,
    last: Vec<u32>,
}

impl SessionCounts {
    fn new(buckets: usize) -> Self {
        Self { counts: vec![0; buckets], last: vec![0; buckets] }
    }

    fn tally(&mut self, csr: &FieldCsr, row: usize, session: u32) {
        for &id in csr.ids(row) {
            if let (Some(c), Some(l)) = (self.counts.get_mut(id as usize), self.last.get_mut(id as usize)) {
                let stamp = session.wrapping_add(1);
                if *l != stamp {
                    *l = stamp;
                    *c = c.saturating_add(1);
                }
            }
        }
    }

    /// The user side: each common row is one session.
    fn add_common(&mut self, common: &CommonTable) {
        for r in 0..common.rows {
            for csr in &common.fields {
                self.tally(csr, r, r as u32);
            }
        }
        self.last.fill(0);
    }

    /// The item side of a batch in file order: each run of one common row is one session.
    fn add_items(&mut self, b: &Batch) {
        for i in 0..b.len() {
            for csr in &b.items {
                self.tally(csr, i, b.common_row[i]);
            }
        }
    }

    /// The ids seen in at least `min_sessions` sessions (with their own rows' weights when
    /// `shrink > 0`), and how many ids were seen at all.
    fn admit(&self, min_sessions: u32, shrink: f32) -> (Vocab, usize) {
        let mut admitted = vec![0u64; self.counts.len().div_ceil(64)];
        let mut seen = 0;
        for (id, &n) in self.counts.iter().enumerate() {
            seen += (n > 0) as usize;
            if n >= min_sessions {
                admitted[id / 64] |= 1 << (id % 64);
            }
        }
        let scale = match shrink > 0.0 {
            true => self
                .counts
                .iter()
                .map(|&n| if n >= min_sessions { n as f32 / (n as f32 + shrink) } else { 0.0 })
                .collect(),
            false => Vec::new(),
        };
        (Vocab { min_sessions, buckets: self.counts.len() as u32, admitted, scale }, seen)
    }
}

impl Vocab {
    /// Every id is its own row (PaddleRec parity).
    pub fn off() -> Self {
        Self::default()
    }

    /// Extra table rows needed: one per field when admission is on.
    pub fn extra_rows(min_sessions: u32) -> usize {
        if min_sessions > 0 {
            FIELDS.len()
        } else {
            0
        }
    }

    pub fn enabled(&self) -> bool {
        self.min_sessions > 0
    }

    /// Counts the sessions of every id in the training split (`samples`, `common`) and admits
    /// those seen in at least `min_sessions` (0: admission off), their own rows weighted by
    /// `n / (n + shrink)` when `shrink > 0`; also returns how many distinct ids training saw.
    pub fn count(
        samples: &Path,
        common: &CommonTable,
        buckets: usize,
        min_sessions: u32,
        shrink: f32,
    ) -> Result<(Self, usize)> {
        if min_sessions == 0 {
            return Ok((Self::off(), 0));
        }
        ensure!(buckets < u32::MAX as usize - FIELDS.len(), "hash_buckets too large for admission");
        let mut c = SessionCounts::new(buckets);
        c.add_common(common);
        let cfg = LoaderConfig {
            path: samples.to_path_buf(),
            batch_size: 1 << 16,
            shuffle_seed: None,
            shuffle_unit: ShuffleUnit::Rows,
            pool_row_groups: 1,
            buckets,
            common: None,
            keep_unclicked: 1.0,
        };
        batches::load(&cfg, |b| {
            c.add_items(&b);
            true
        })?;
        Ok(c.admit(min_sessions, shrink))
    }

    /// Whether `id` has a row of its own.
    #[inline(always)]
    pub fn admits(&self, id: u32) -> bool {
        self.admitted.get(id as usize / 64).is_some_and(|w| w >> (id % 64) & 1 == 1)
    }

    /// The weight of `id`'s own row in its embedding, `None` when it has none.
    #[inline(always)]
    pub fn own_weight(&self, id: u32) -> Option<f32> {
        match self.admits(id) {
            false => None,
            true if self.scale.is_empty() => Some(1.0),
            true => Some(self.scale[id as usize]),
        }
    }

    /// How many ids have rows of their own.
    pub fn admitted(&self) -> usize {
        self.admitted.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The shared row of field `f`.
    #[inline(always)]
    pub fn field_row(&self, f: usize) -> u32 {
        self.buckets + f as u32
    }

    /// The threshold, the table's hash buckets, the bitset words and the own rows' weights
    /// (checkpoints).
    pub fn parts(&self) -> (u32, u32, &[u64], &[f32]) {
        (self.min_sessions, self.buckets, &self.admitted, &self.scale)
    }

    pub fn from_parts(min_sessions: u32, buckets: u32, admitted: Vec<u64>, scale: Vec<f32>) -> Result<Self> {
        if min_sessions == 0 {
            return Ok(Self::off());
        }
        ensure!(
            admitted.len() == (buckets as usize).div_ceil(64),
            "an admission bitset of {} words for {buckets} hash buckets",
            admitted.len()
        );
        ensure!(
            scale.is_empty() || scale.len() == buckets as usize && scale.iter().all(|s| (0.0..=1.0).contains(s)),
            "{} own-row weights for {buckets} hash buckets (or weights outside [0, 1])",
            scale.len()
        );
        Ok(Self { min_sessions, buckets, admitted, scale })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{side_fields, Side};

    fn csr(rows: &[&[u32]]) -> FieldCsr {
        let mut c = FieldCsr { offsets: vec![0], ids: vec![], weights: vec![] };
        for r in rows {
            c.ids.extend_from_slice(r);
            c.offsets.push(c.ids.len());
        }
        c
    }

    /// Sessions, not rows, are counted: an id repeated within a common row or within a run of
    /// rows of one session counts once; ids outside the table are never admitted.
    #[test]
    fn ids_are_counted_per_session_and_admitted_at_the_threshold() {
        let n_user = side_fields(Side::User).len();
        let mut users: Vec<FieldCsr> = (0..n_user).map(|_| csr(&[&[], &[], &[]])).collect();
        users[0] = csr(&[&[5], &[5], &[6]]); // user id 5 in two sessions, 6 in one
        users[1] = csr(&[&[7, 7, 8], &[8], &[8]]); // 7 twice in one session; 8 in three
        let common = CommonTable { fields: users, rows: 3, md5: vec![0; 3] };
        let mut items: Vec<FieldCsr> = side_fields(Side::Item).iter().map(|_| csr(&[&[] as &[u32]; 5])).collect();
        // item id 20 in every row of session 0 (3 rows): one session; 21 in sessions 0 and 2;
        // 999 is outside the 64 buckets
        items[0] = csr(&[&[20], &[20], &[20, 21], &[22], &[21, 999]]);
        let batch = Batch { click: vec![0; 5], common_row: vec![0, 0, 0, 1, 2], items, ..Default::default() };
        let mut c = SessionCounts::new(64);
        c.add_common(&common);
        c.add_items(&batch);
        let count = |id: usize| c.counts[id];
        assert_eq!([count(5), count(6), count(7), count(8)], [2, 1, 1, 3]);
        assert_eq!([count(20), count(21), count(22)], [1, 2, 1]);
        let (v, seen) = c.admit(2, 0.0);
        assert_eq!(seen, 7);
        let admitted: Vec<u32> = (0..1000).filter(|&id| v.admits(id)).collect();
        assert_eq!(admitted, [5, 8, 21]);
        assert_eq!(v.admitted(), 3);
        assert_eq!((v.field_row(0), v.field_row(22)), (64, 86));
        assert_eq!(Vocab::extra_rows(2), FIELDS.len());
        assert_eq!((v.own_weight(8), v.own_weight(7)), (Some(1.0), None));
        let (m, b, w, s) = v.parts();
        assert!(s.is_empty());
        assert_eq!(Vocab::from_parts(m, b, w.to_vec(), vec![]).unwrap(), v);
        assert!(Vocab::from_parts(2, 640, w.to_vec(), vec![]).is_err());
        // shrinkage: own rows weighted n / (n + k), the same admitted set
        let (v, _) = c.admit(2, 2.0);
        assert_eq!([v.own_weight(5), v.own_weight(8), v.own_weight(7)], [Some(0.5), Some(0.6), None]);
        let (m, b, w, s) = v.parts();
        assert_eq!(Vocab::from_parts(m, b, w.to_vec(), s.to_vec()).unwrap(), v);
        assert!(Vocab::from_parts(m, b, w.to_vec(), s[..10].to_vec()).is_err());
        assert!(!Vocab::off().enabled() && Vocab::extra_rows(0) == 0);
    }
}
