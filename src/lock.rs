//! Output locks: one `esmm` process at a time writes an output directory (or output file), and
//! no stage reads a directory another process is rewriting.
//!
//! A lock is an advisory OS lock (`flock(2)` through std's `File::try_lock`) on a small file
//! beside the outputs: `DIR/.esmm.lock` for a directory, `.<name>.lock` beside a single-file
//! output. The kernel releases it when the process ends, however it ends (SIGKILL included), so
//! a crashed run never leaves a stale lock: the next run simply takes it. The file's text (pid,
//! stage, start time) only serves to name the holder when a second process finds it taken.
//!
//! Kinds: a stage takes its output lock *exclusive*; a shard of a sharded stage
//! (`--shard i/n`) takes the directory lock *shared* plus an exclusive lock of its own shard
//! (`DIR/.esmm.part-0000i-of-0000n.lock`), so the n shards run side by side while an unsharded
//! writer (or a reader) is kept out; a stage takes the directories it reads *shared*. Never
//! blocking: a taken lock is an immediate error (exit status 1).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Name of a directory's lock file.
pub const DIR_LOCK: &str = ".esmm.lock";

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct Lock {
    files: Vec<(File, PathBuf)>,
}

impl Lock {
    /// The lock files held.
    pub fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|(_, p)| p.as_path()).collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Exclusive,
    Shared,
}

/// The lock file of an output directory.
pub fn dir_lock_path(dir: &Path) -> PathBuf {
    dir.join(DIR_LOCK)
}

/// The lock file of a single-file output: `.<name>.lock` beside it.
pub fn file_lock_path(file: &Path) -> PathBuf {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    file.with_file_name(format!(".{name}.lock"))
}

/// Exclusive lock of an output directory (created if needed), for `stage`.
pub fn exclusive_dir(dir: &Path, stage: &str) -> Result<Lock> {
    fs::create_dir_all(dir).with_context(|| format!("creating output directory {}", dir.display()))?;
    Ok(Lock { files: vec![take(&dir_lock_path(dir), Mode::Exclusive, stage, "write")?] })
}

/// Exclusive lock of a single-file output (its directory is created if needed).
pub fn exclusive_file(file: &Path, stage: &str) -> Result<Lock> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating output directory {}", dir.display()))?;
    }
    Ok(Lock { files: vec![take(&file_lock_path(file), Mode::Exclusive, stage, "write")?] })
}

/// One shard's lock: `dir` shared (other shards may hold it too) and `DIR/.esmm.<tag>.lock`
/// exclusive.
pub fn shard(dir: &Path, tag: &str, stage: &str) -> Result<Lock> {
    fs::create_dir_all(dir).with_context(|| format!("creating output directory {}", dir.display()))?;
    let shared = take(&dir_lock_path(dir), Mode::Shared, stage, "write shards of")?;
    let own = take(&dir.join(format!(".esmm.{tag}.lock")), Mode::Exclusive, stage, "write")?;
    Ok(Lock { files: vec![shared, own] })
}

/// Shared lock of an input directory: fails while another process holds it exclusive (is
/// rewriting it). Best effort where the lock file cannot be created (read-only input): no lock.
pub fn read_dir(dir: &Path, stage: &str) -> Result<Option<Lock>> {
    let path = dir_lock_path(dir);
    if !dir.is_dir() {
        return Ok(None);
    }
    match OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path) {
        Ok(_) => Ok(Some(Lock { files: vec![take(&path, Mode::Shared, stage, "read")?] })),
        Err(_) => Ok(None),
    }
}

fn take(path: &Path, mode: Mode, stage: &str, verb: &str) -> Result<(File, PathBuf)> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    let got = match mode {
        Mode::Exclusive => file.try_lock(),
        Mode::Shared => file.try_lock_shared(),
    };
    match got {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let holder = holder(&mut file);
            let target = path.parent().map_or_else(|| path.display().to_string(), |d| d.display().to_string());
            bail!(
                "esmm {stage}: cannot {verb} {target}: lock {} is held by {holder}; wait for that run to finish \
                 (or stop it). A crashed run releases its lock automatically.",
                path.display()
            );
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    if mode == Mode::Exclusive {
        // Name ourselves as the holder; failures here do not matter for the lock itself.
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let text = format!("pid {} (esmm {stage}, started unix {started})\n", std::process::id());
        let _ =
            file.set_len(0).and_then(|_| file.seek(SeekFrom::Start(0))).and_then(|_| file.write_all(text.as_bytes()));
    }
    Ok((file, path.to_path_buf()))
}

/// Who holds a lock, from the text the holder wrote (a shared holder writes none).
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_string(&mut text));
    match text.trim() {
        "" => "another esmm process (sharded run or reader)".to_string(),
        t => format!("another esmm process: {t}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_and_is_released_on_drop() {
        let dir = crate::testutil::temp_dir("lock");
        let a = exclusive_dir(&dir, "ingest").unwrap();
        let err = format!("{:#}", exclusive_dir(&dir, "ingest").unwrap_err());
        assert!(err.contains(".esmm.lock") && err.contains(&format!("pid {}", std::process::id())), "{err}");
        assert!(read_dir(&dir, "split").is_err(), "a reader must not see a directory being written");
        assert!(shard(&dir, "part-00000-of-00002", "ingest").is_err());
        drop(a);
        let r1 = read_dir(&dir, "split").unwrap();
        let r2 = read_dir(&dir, "train").unwrap();
        assert!(r1.is_some() && r2.is_some(), "readers share");
        assert!(exclusive_dir(&dir, "ingest").is_err());
        drop((r1, r2));
        let s0 = shard(&dir, "part-00000-of-00002", "ingest").unwrap();
        let s1 = shard(&dir, "part-00001-of-00002", "ingest").unwrap();
        assert!(shard(&dir, "part-00001-of-00002", "ingest").is_err(), "one process per shard");
        assert!(exclusive_dir(&dir, "ingest").is_err(), "no unsharded writer beside shards");
        drop((s0, s1));
        exclusive_dir(&dir, "ingest").unwrap();
    }

    #[test]
    fn file_locks_are_per_file() {
        let dir = crate::testutil::temp_dir("lockfile");
        let a = exclusive_file(&dir.join("test.parquet"), "predict").unwrap();
        let _b = exclusive_file(&dir.join("valid.parquet"), "predict").unwrap();
        assert!(exclusive_file(&dir.join("test.parquet"), "predict").is_err());
        assert!(a.paths()[0].ends_with(".test.parquet.lock"));
    }
}
