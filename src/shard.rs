//! Sharded fan-out (`--shard i/n`): which shard owns a session, and how part files are named.
//!
//! Ingest shards by session: the md5 (join key) `k` belongs to shard
//! `mix64(k ^ SHARD_SALT) mod n` (`mix64`: the splitmix64 finalizer, [`crate::rng`]). A session's
//! common row and all its samples land in the same shard, so each part is self-contained
//! (`common_row` indexes the part's own common table) and the valid split, which is also drawn
//! per md5, never needs two parts at once. Lines without a readable md5 (skipped in any case)
//! are owned by line number, `mix64(line ^ SHARD_SALT) mod n`, so each raw line is counted by
//! exactly one shard. Predict shards contiguous ranges of batches, so the parts, concatenated in
//! shard order, are the unsharded file row for row.
//!
//! Part names: `<stem>.part-0000i-of-0000n.<ext>`, zero-padded so that name order is shard order
//! (`samples.part-00002-of-00008.parquet`); a shard's manifest is `_manifest.part-…json`.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::rng::mix64;

/// Salt of the shard hash (ASCII "esmmshrd").
pub const SHARD_SALT: u64 = 0x6573_6d6d_7368_7264;

/// Shard `index` of `count` (0-based, like Kubernetes' JOB_COMPLETION_INDEX and Airflow's map_index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parses `i/n` with `0 <= i < n`.
    pub fn parse(s: &str) -> Result<Self> {
        let (i, n) = s.split_once('/').with_context(|| format!("--shard `{s}`: expected INDEX/COUNT, e.g. 0/4"))?;
        let index: u32 = i.trim().parse().with_context(|| format!("--shard `{s}`: bad index `{i}`"))?;
        let count: u32 = n.trim().parse().with_context(|| format!("--shard `{s}`: bad count `{n}`"))?;
        if count == 0 || index >= count {
            bail!("--shard `{s}`: need 0 <= INDEX < COUNT");
        }
        if count > 99_999 {
            bail!("--shard `{s}`: at most 99999 shards");
        }
        Ok(Self { index, count })
    }

    /// `part-0000i-of-0000n`
    pub fn tag(self) -> String {
        format!("part-{:05}-of-{:05}", self.index, self.count)
    }

    /// The shard of a join key (md5).
    #[inline]
    pub fn of_key(key: u64, count: u32) -> u32 {
        (mix64(key ^ SHARD_SALT) % count as u64) as u32
    }

    #[inline]
    pub fn owns_key(self, key: u64) -> bool {
        Self::of_key(key, self.count) == self.index
    }

    /// Owner of a line without a readable key.
    #[inline]
    pub fn owns_line(self, line: u64) -> bool {
        Self::of_key(line, self.count) == self.index
    }

    /// `dir/stem.ext` → `dir/stem.part-….ext`
    pub fn part_path(self, path: &Path) -> PathBuf {
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let name = match path.extension() {
            Some(ext) => format!("{stem}.{}.{}", self.tag(), ext.to_string_lossy()),
            None => format!("{stem}.{}", self.tag()),
        };
        path.with_file_name(name)
    }

    /// The manifest of this shard in an output directory.
    pub fn manifest_name(self) -> String {
        format!("_manifest.{}.json", self.tag())
    }

    /// Parses a `…part-0000i-of-0000n…` tag out of a file name.
    pub fn from_name(name: &str) -> Option<Self> {
        let at = name.find("part-")?;
        let rest = &name[at + 5..];
        let (i, rest) = rest.split_once("-of-")?;
        let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let (index, count) = (i.parse().ok()?, n.parse().ok()?);
        (index < count).then_some(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_names() {
        let s = Shard::parse("2/8").unwrap();
        assert_eq!((s.index, s.count), (2, 8));
        assert_eq!(s.tag(), "part-00002-of-00008");
        assert_eq!(s.part_path(Path::new("d/samples.parquet")), Path::new("d/samples.part-00002-of-00008.parquet"));
        assert_eq!(Shard::from_name("samples.part-00002-of-00008.parquet"), Some(s));
        assert_eq!(Shard::from_name(&s.manifest_name()), Some(s));
        for bad in ["", "3", "8/8", "1/0", "a/2", "-1/2", "1/2/3"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_spread_over_every_shard_exactly_once() {
        let n = 5;
        let mut counts = [0u32; 5];
        for k in 0..10_000u64 {
            let owners: Vec<u32> = (0..n).filter(|&i| Shard { index: i, count: n }.owns_key(mix64(k))).collect();
            assert_eq!(owners.len(), 1);
            counts[owners[0] as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (1_700..2_300).contains(&c)), "{counts:?}");
    }
}
