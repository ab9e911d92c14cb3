//! One process per data directory: an exclusive `flock` on `DATA_DIR/.lock`,
//! taken before anything in the directory is read or changed and held for
//! the life of the process (the kernel drops it when the process dies, so a
//! crash never leaves a stale lock). The file holds the holder's PID, so a
//! second broker, or `strata verify`, can name it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};
use crate::log::format::LOCK_FILE;

/// The held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Takes the lock on `data_dir` (created if missing), or fails with
/// [`Error::DataDirInUse`] naming the holder's PID.
pub fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock> {
    std::fs::create_dir_all(data_dir).map_err(|e| Error::storage(format!("creating {}", data_dir.display()), e))?;
    let path = data_dir.join(LOCK_FILE);
    let context = |e| Error::storage(format!("locking {}", path.display()), e);
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(context)?;
    // SAFETY: a plain syscall on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(context(e));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(Error::DataDirInUse { dir: data_dir.to_path_buf(), holder: text.trim().parse().ok() });
    }
    let write_pid = |f: &mut File| -> io::Result<()> {
        f.set_len(0)?;
        f.rewind()?;
        writeln!(f, "{}", std::process::id())?;
        f.sync_all()
    };
    write_pid(&mut file).map_err(context)?;
    Ok(DataDirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_dropped_one_frees_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_data_dir(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open in
        // this process conflicts as another process's would.
        match lock_data_dir(dir.path()) {
            Err(Error::DataDirInUse { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        drop(held);
        lock_data_dir(dir.path()).unwrap();
    }
}
