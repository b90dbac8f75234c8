//! Stage manifests, input fingerprints, and write-to-temp-then-rename outputs.
//!
//! Protocol, shared by every stage: (1) delete the old `_manifest.json` of the output directory,
//! (2) write each output under a temporary name and rename it into place when complete,
//! (3) write the manifest last, itself atomically. A directory without a manifest is unfinished,
//! whatever files it holds, and downstream stages refuse it.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::schema::{DataContract, HASH_BUCKETS, MANIFEST_FILE};

/// A file the stage read or wrote, identified cheaply.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    /// xxh3-64 (hex) of size, mtime and five 1 MiB samples (start, quarters, end): cheap on
    /// 38 GB of raw input, and it changes whenever a file is replaced or grows.
    pub fingerprint: String,
}

/// What a stage did: written as `_manifest.json` beside its outputs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub stage: String,
    pub version: String,
    /// xxh3-64 of the stage's canonical JSON config; with the input fingerprints it decides skips.
    pub config_hash: String,
    pub config: serde_json::Value,
    pub inputs: Vec<FileEntry>,
    pub outputs: Vec<FileEntry>,
    /// The hashing behind the tables' ids (ingest, split; absent elsewhere and in older
    /// manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataContract>,
    /// Stage-specific counts (rows read, rows written, label sums, ...).
    pub counts: BTreeMap<String, u64>,
    /// Skipped units (rows or features) per reason, and valid-but-counted cases.
    pub skipped: BTreeMap<String, u64>,
    pub seconds: f64,
    pub threads: usize,
    pub finished_unix: u64,
}

impl Manifest {
    /// The hash-bucket count of the tables this manifest describes: from its data contract, or
    /// from the counts where split manifests kept it before the contract existed.
    pub fn hash_buckets(&self) -> Option<u64> {
        self.data.as_ref().map(|d| d.hash_buckets).or_else(|| self.counts.get(HASH_BUCKETS).copied())
    }
}

const SAMPLE: u64 = 1 << 20;

/// Fingerprint of one file (see [`FileEntry::fingerprint`]).
pub fn fingerprint(path: &Path) -> Result<FileEntry> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let meta = file.metadata().with_context(|| format!("stat {}", path.display()))?;
    let bytes = meta.len();
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    let mut h = Xxh3::new();
    h.update(&bytes.to_le_bytes());
    h.update(&mtime.to_le_bytes());
    let mut buf = vec![0u8; SAMPLE as usize];
    let last = bytes.saturating_sub(SAMPLE);
    for pos in [0, last / 4, last / 2, last / 4 * 3, last] {
        file.seek(SeekFrom::Start(pos))?;
        let n = read_up_to(&mut file, &mut buf)?;
        h.update(&buf[..n]);
    }
    Ok(FileEntry { path: path.display().to_string(), bytes, fingerprint: format!("{:016x}", h.digest()) })
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Canonical hash of a serializable config section.
pub fn config_hash<T: Serialize>(config: &T) -> Result<(String, serde_json::Value)> {
    let value = serde_json::to_value(config)?;
    let text = serde_json::to_string(&value)?;
    Ok((format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes())), value))
}

pub fn manifest_path(dir: &Path) -> PathBuf {
    dir.join(MANIFEST_FILE)
}

/// Manifest of a single-file output: `<file>.manifest.json`.
pub fn file_manifest_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".manifest.json");
    file.with_file_name(name)
}

/// The manifest of a finished stage in `dir`, or `None` if the stage never finished there.
pub fn read(dir: &Path) -> Result<Option<Manifest>> {
    read_path(&manifest_path(dir))
}

pub fn read_path(path: &Path) -> Result<Option<Manifest>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The manifest of `dir`, which must exist: an upstream stage's outputs are only used when whole.
pub fn require(dir: &Path, stage: &str) -> Result<Manifest> {
    match read(dir)? {
        Some(m) => Ok(m),
        None => bail!(
            "{} has no {MANIFEST_FILE}: run `esmm {stage}` into it first (an unfinished or crashed \
             stage leaves no manifest)",
            dir.display()
        ),
    }
}

/// Step (1) of the protocol: mark the outputs unfinished before touching any of them.
/// Removes the manifest at `path` (creating its directory if needed).
pub fn invalidate_path(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing old manifest {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Removes the files of `dir` (and of its sub-directories, down to `depth` levels) whose name
/// matches: leftovers of a run killed half-way (temporaries, stale manifests). A missing `dir`
/// is fine.
pub fn remove_matching(dir: &Path, depth: usize, matches: impl Fn(&str) -> bool + Copy) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let kind = entry.file_type().with_context(|| format!("stat {}", path.display()))?;
        if kind.is_dir() && depth > 1 {
            remove_matching(&path, depth - 1, matches)?;
        } else if kind.is_file() && matches(&entry.file_name().to_string_lossy()) {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing leftover {}", path.display()))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Step (3): the manifest, written atomically.
pub fn write_path(path: &Path, manifest: &Manifest) -> Result<()> {
    let text = serde_json::to_vec_pretty(manifest)?;
    let mut out = AtomicFile::create(path)?;
    out.write_all(&text)?;
    out.commit()
}

/// True when the manifest at `path` records a finished run of `stage` with the same config
/// hash and inputs, and its outputs are unchanged.
pub fn up_to_date(path: &Path, stage: &str, config_hash: &str, inputs: &[FileEntry]) -> bool {
    match read_path(path) {
        Ok(Some(m)) => {
            m.stage == stage
                && m.config_hash == config_hash
                && m.inputs == inputs
                && m.outputs.iter().all(|o| fingerprint(Path::new(&o.path)).is_ok_and(|now| now == *o))
        }
        _ => false,
    }
}

/// A file written under `<name>.tmp-<pid>` and renamed to its final name by [`commit`]; dropped
/// without commit (error, panic), the temporary is removed.
///
/// [`commit`]: AtomicFile::commit
pub struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    pub fn create(dest: &Path) -> Result<Self> {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let name = dest.file_name().context("output path has no file name")?;
        let tmp = dest.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(Self { tmp, dest: dest.to_path_buf(), out: Some(BufWriter::with_capacity(1 << 20, file)) })
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Flush, fsync, rename into place. On failure (e.g. a full disk: the last buffered bytes
    /// are only written here) the temporary is removed too.
    pub fn commit(mut self) -> Result<()> {
        let out = self.out.take().context("AtomicFile committed twice")?;
        let done = (|| {
            let file = out
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("writing {}", self.tmp.display()))?;
            file.sync_all().with_context(|| format!("syncing {}", self.tmp.display()))?;
            fs::rename(&self.tmp, &self.dest).with_context(|| format!("renaming into {}", self.dest.display()))
        })();
        if done.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        done
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.out.as_mut() {
            Some(out) => out.write(buf),
            None => Err(std::io::Error::other("AtomicFile already committed")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_file_is_invisible_until_commit() {
        let dir = crate::testutil::temp_dir("atomic");
        let dest = dir.join("x.bin");
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"half").unwrap();
            assert!(!dest.exists());
        } // dropped without commit: nothing left behind
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"whole").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"whole");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn fingerprint_changes_with_content_and_size() {
        let dir = crate::testutil::temp_dir("fp");
        let p = dir.join("a.csv");
        fs::write(&p, b"1,0,0\n").unwrap();
        let a = fingerprint(&p).unwrap();
        assert_eq!(a, fingerprint(&p).unwrap());
        fs::write(&p, b"1,0,1\n").unwrap();
        let b = fingerprint(&p).unwrap();
        assert_ne!(a.fingerprint, b.fingerprint);
        fs::write(&p, b"1,0,1\n2,0,0\n").unwrap();
        assert_ne!(b, fingerprint(&p).unwrap());
    }

    /// The bucket count comes from the data contract, or from the counts of a split manifest
    /// written before the contract existed.
    #[test]
    fn hash_buckets_from_the_contract_or_older_counts() {
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "stage": "split", "version": "0.1.0", "config_hash": "0", "config": {}, "inputs": [],
            "outputs": [], "counts": {"hash_buckets": 4096}, "skipped": {}, "seconds": 0.0,
            "threads": 1, "finished_unix": 0
        }))
        .unwrap();
        assert_eq!((m.data.as_ref(), m.hash_buckets()), (None, Some(4096)));
        m.counts.clear();
        assert_eq!(m.hash_buckets(), None);
        let data = DataContract {
            format: "aliccp".into(),
            hash_buckets: 1 << 20,
            hash_seed: 7,
            max_ids_per_field: Default::default(),
        };
        m.data = Some(data);
        assert_eq!(m.hash_buckets(), Some(1 << 20));
        // written and read back with the contract; without one the key is left out
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains("\"hash_seed\":7"));
        m.data = None;
        assert!(!serde_json::to_string(&m).unwrap().contains("\"data\""));
    }
}
