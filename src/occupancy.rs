//! What the hashed embedding table holds, for sizing `ingest.hash_buckets`: the buckets the ids
//! of a split use, overall and per field, and what that implies under uniform hashing (the
//! contract's xxh3 is uniform): the distinct raw ids behind them and the share of ids that
//! share their bucket with another id.
//!
//! `n` distinct ids thrown uniformly into `m` buckets fill `m·(1 − e^(−n/m))` of them on
//! average, so `n ≈ −m·ln(1 − used/m)`; an id then shares its bucket with at least one other id
//! with probability `1 − e^(−(n−1)/m)`, about the table's load `used/m`. Overall the count is
//! exact over every bucket; per field it is counted on a sketch of at most [`SKETCH_BITS`]
//! slots (the bucket number folded onto them), which estimates up to ~10 M ids per field.

use std::collections::BTreeMap;

use crate::schema::FIELDS;

/// Slots of each field's sketch: 2^22 (512 KiB), exact for tables of up to 2^22 + 1 buckets.
pub const SKETCH_BITS: usize = 1 << 22;

/// The buckets a split's ids use: one bit per bucket of the table, and per field one bit per slot.
pub struct Occupancy {
    /// Buckets ids can land in: `hash_buckets − 1` (bucket 0 is padding).
    buckets: usize,
    all: Vec<u64>,
    slots: usize,
    fields: Vec<Vec<u64>>,
}

#[inline]
fn set(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn ones(bits: &[u64]) -> u64 {
    bits.iter().map(|w| w.count_ones() as u64).sum()
}

/// Distinct ids behind `used` of `slots` buckets under uniform hashing.
fn distinct(used: u64, slots: usize) -> f64 {
    let m = slots as f64;
    if used as f64 >= m {
        return m * m.ln(); // every slot hit: at least this many (coupon collector)
    }
    -m * (1.0 - used as f64 / m).ln()
}

impl Occupancy {
    /// Occupancy of a table of `hash_buckets` rows (row 0 the padding).
    pub fn new(hash_buckets: u64) -> Self {
        let buckets = hash_buckets.saturating_sub(1).max(1) as usize;
        let slots = buckets.min(SKETCH_BITS);
        let words = |bits: usize| vec![0u64; bits.div_ceil(64)];
        Self { buckets, all: words(buckets), slots, fields: (0..FIELDS.len()).map(|_| words(slots)).collect() }
    }

    /// Records the hashed ids (`1..hash_buckets`) of field index `field`.
    pub fn add(&mut self, field: usize, ids: &[u32]) {
        let (buckets, slots) = (self.buckets, self.slots);
        let sketch = &mut self.fields[field];
        for &id in ids.iter().filter(|&&id| id >= 1 && (id as usize) <= buckets) {
            let b = id as usize - 1;
            set(&mut self.all, b);
            set(sketch, b % slots);
        }
    }

    /// Adds the manifest counts under `prefix` (e.g. `train.`): `buckets_used`, `ids_estimated`,
    /// `ids_sharing_a_bucket_permille` over the whole table, and per field `buckets_used.<field>`
    /// (on its sketch when the table is larger) and `ids_estimated.<field>`.
    pub fn record(&self, prefix: &str, counts: &mut BTreeMap<String, u64>) {
        let used = ones(&self.all);
        let n = distinct(used, self.buckets);
        let sharing = 1.0 - (-(n - 1.0).max(0.0) / self.buckets as f64).exp();
        counts.insert(format!("{prefix}buckets_used"), used);
        counts.insert(format!("{prefix}ids_estimated"), n.round() as u64);
        counts.insert(format!("{prefix}ids_sharing_a_bucket_permille"), (sharing * 1000.0).round() as u64);
        for (field, sketch) in FIELDS.iter().zip(&self.fields) {
            let used = ones(sketch);
            if used > 0 {
                counts.insert(format!("{prefix}buckets_used.{}", field.name), used);
                counts
                    .insert(format!("{prefix}ids_estimated.{}", field.name), distinct(used, self.slots).round() as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::FeatureHasher;

    /// Known numbers of distinct raw ids hashed by the contract's hasher: the estimates recover
    /// them within a few percent, at a light and at a heavy load, on the exact table and on the
    /// folded sketch, and repeats of an id change nothing.
    #[test]
    fn estimates_recover_the_distinct_ids() {
        for (hash_buckets, n_item, n_user) in [(1u64 << 16, 20_000u64, 3_000u64), (1 << 23, 6_000_000, 500)] {
            let h = FeatureHasher::new(hash_buckets, 0).unwrap();
            let mut occ = Occupancy::new(hash_buckets);
            let (item, user) =
                (crate::schema::field_index(b"205").unwrap(), crate::schema::field_index(b"101").unwrap());
            for (field, n) in [(item, n_item), (user, n_user)] {
                let ids: Vec<u32> = (0..n).map(|raw| h.bucket(field, raw * 7919)).collect();
                occ.add(field, &ids);
                occ.add(field, &ids[..ids.len() / 2]);
            }
            let mut c = BTreeMap::new();
            occ.record("train.", &mut c);
            let near = |got: u64, want: u64, tol: f64| (got as f64 / want as f64 - 1.0).abs() < tol;
            assert!(near(c["train.ids_estimated"], n_item + n_user, 0.02), "{c:?}");
            assert!(near(c["train.ids_estimated.205"], n_item, 0.03), "{c:?}");
            assert!(near(c["train.ids_estimated.101"], n_user, 0.05), "{c:?}");
            assert!(!c.contains_key("train.buckets_used.210"));
            let load = c["train.buckets_used"] as f64 / (hash_buckets - 1) as f64;
            let sharing = c["train.ids_sharing_a_bucket_permille"] as f64 / 1000.0;
            assert!((sharing - load).abs() < 0.01, "{sharing} vs load {load}");
        }
    }
}
