//! Feature hashing: (field, raw feature id) → embedding bucket in `1..hash_buckets`.
//!
//! The contract (docs/data.md, "Data contracts"), platform independent and fixed by test vectors below:
//!
//! ```text
//! field_seed(f) = xxh3_64_with_seed(utf8 bytes of the field name, e.g. "109_14", hash_seed)
//! bucket(f, id) = 1 + xxh3_64_with_seed(id as 8 little-endian bytes, field_seed(f)) mod (hash_buckets - 1)
//! ```
//!
//! Bucket 0 is never produced: it is reserved for padding / missing values. The same raw id in
//! two fields lands in unrelated buckets. `xxh3_64_with_seed` is XXH3-64 from the xxHash
//! specification (any conforming implementation, e.g. Python's `xxhash.xxh3_64_intdigest`).

use anyhow::{bail, Result};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::schema::FIELDS;

/// Hashes raw ids of the 23 contract fields into `hash_buckets` buckets.
#[derive(Clone, Debug)]
pub struct FeatureHasher {
    modulus: u64,
    field_seeds: [u64; FIELDS.len()],
}

impl FeatureHasher {
    /// `hash_buckets` counts the padding bucket 0, so at least 2 are needed; ids must fit u32.
    pub fn new(hash_buckets: u64, hash_seed: u64) -> Result<Self> {
        if !(2..=1u64 << 32).contains(&hash_buckets) {
            bail!("hash_buckets must be in 2..=2^32, got {hash_buckets}");
        }
        let mut field_seeds = [0u64; FIELDS.len()];
        for (seed, field) in field_seeds.iter_mut().zip(FIELDS.iter()) {
            *seed = xxh3_64_with_seed(field.name.as_bytes(), hash_seed);
        }
        Ok(Self { modulus: hash_buckets - 1, field_seeds })
    }

    /// The seed of field index `field`: `xxh3_64_with_seed(field name, hash_seed)` (exported in
    /// the serving contract).
    pub fn field_seed(&self, field: usize) -> u64 {
        self.field_seeds[field]
    }

    /// Bucket of raw id `raw_id` of field index `field` (an index into [`FIELDS`]).
    #[inline]
    pub fn bucket(&self, field: usize, raw_id: u64) -> u32 {
        let h = xxh3_64_with_seed(&raw_id.to_le_bytes(), self.field_seeds[field]);
        (1 + h % self.modulus) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::field_index;

    /// Fixed vectors, computed independently with Python's `xxhash` package (see
    /// `tests/readers.py`): changing any of them changes every Parquet file ever written.
    #[test]
    fn test_vectors() {
        let h = FeatureHasher::new(1 << 20, 0).unwrap();
        let got: Vec<u32> = [("101", 1u64), ("101", 2), ("205", 1), ("109_14", 12345), ("301", 3)]
            .iter()
            .map(|&(f, id)| h.bucket(field_index(f.as_bytes()).unwrap(), id))
            .collect();
        assert_eq!(got, VECTORS_SEED0.to_vec());
        let h7 = FeatureHasher::new(1000, 7).unwrap();
        assert_eq!(h7.bucket(field_index(b"853").unwrap(), u64::MAX), VECTOR_SEED7);
    }

    const VECTORS_SEED0: [u32; 5] = [152723, 428134, 287093, 380054, 545624];
    const VECTOR_SEED7: u32 = 172;

    #[test]
    fn never_bucket_zero_and_in_range() {
        let h = FeatureHasher::new(3, 1).unwrap();
        for id in 0..10_000u64 {
            for f in 0..FIELDS.len() {
                let b = h.bucket(f, id);
                assert!((1..3).contains(&b));
            }
        }
        assert!(FeatureHasher::new(1, 0).is_err());
        assert!(FeatureHasher::new((1 << 32) + 1, 0).is_err());
    }

    #[test]
    fn fields_hash_independently() {
        let h = FeatureHasher::new(1 << 30, 0).unwrap();
        let same = (0..1000u64).filter(|&id| h.bucket(0, id) == h.bucket(1, id)).count();
        assert!(same < 3, "{same} collisions across fields");
    }
}
