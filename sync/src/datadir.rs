//! Where a Peernotes device keeps its data, and the one-writer-per-data-dir lock.
//!
//! The data dir comes from `--data-dir`, else `PEERNOTES_DATA`, else the platform
//! default (`~/.local/share/peernotes` on Linux). It is created with mode 0700.
//! Its layout is versioned by the store's schema, so upgrades keep it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Environment variable that overrides the platform's default data dir.
pub const DATA_ENV: &str = "PEERNOTES_DATA";
const LOCK_FILE: &str = "peernotes.lock";

pub struct DataDir;

impl DataDir {
    /// The data dir to use: the flag, else `PEERNOTES_DATA`, else the platform default.
    pub fn resolve(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
        if let Some(dir) = flag {
            return Ok(dir);
        }
        if let Some(dir) = std::env::var_os(DATA_ENV).filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
        let dirs = directories::ProjectDirs::from("app", "Peernotes", "peernotes").ok_or_else(|| {
            anyhow::anyhow!("cannot find a home directory for the data dir; pass --data-dir or set {DATA_ENV}")
        })?;
        Ok(dirs.data_dir().to_path_buf())
    }

    /// Creates the data dir (mode 0700) if it does not exist.
    pub fn create(dir: &Path) -> Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|cause| Error::DataDirUnusable {
            dir: dir.to_path_buf(),
            cause,
        })
    }

    /// Whether a process holding the data dir's lock is running (judged by the
    /// pid it recorded; on systems without `/proc`, assumed so).
    pub fn writer_running(dir: &Path) -> bool {
        let Ok(pid) = std::fs::read_to_string(dir.join(LOCK_FILE)) else {
            return false;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            return false;
        };
        let proc = Path::new("/proc");
        if !proc.is_dir() {
            return true;
        }
        pid != std::process::id() && proc.join(pid.to_string()).exists()
    }

    /// Whether `dir` already holds a Peernotes store.
    pub fn exists(dir: &Path) -> bool {
        dir.join(crate::store::STORE_FILE).is_file()
    }
}

/// The exclusive lock a process holds on a data dir while it may write to it.
/// Released when dropped (or when the process dies, however it dies).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(dir: &Path) -> Result<DataDirLock> {
        let path = dir.join(LOCK_FILE);
        let unusable = |cause| Error::DataDirUnusable {
            dir: dir.to_path_buf(),
            cause,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(unusable)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(Error::DataDirInUse {
                    dir: dir.to_path_buf(),
                    pid: pid.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(unusable(e)),
        }
        // Record who holds it, for the message another process shows.
        file.set_len(0).map_err(unusable)?;
        file.seek(SeekFrom::Start(0)).map_err(unusable)?;
        write!(file, "{}", std::process::id()).map_err(unusable)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        match DataDirLock::acquire(dir.path()) {
            Err(Error::DataDirInUse { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected DataDirInUse, got {other:?}"),
        }
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
