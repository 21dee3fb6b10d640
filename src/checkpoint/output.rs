//! Where outputs go, decided before any byte is written: no output is an input or another
//! output, an existing output is a regular file (never a device, FIFO or directory), its
//! directory exists. Each output is written into a temporary file beside it, created with the
//! permissions a plain create would give (the umask's, or those of the file it replaces),
//! registered so that a signal handler can remove it, and renamed to its final name only at
//! the end; several outputs are renamed together under the registry's lock, so a signal sees
//! either none or all of them in place.

use std::fs::Permissions;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::file::plain_os_error;
use crate::error::{Error, Result};

/// Temporary files not yet renamed, for [`remove_pending`].
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn pending() -> MutexGuard<'static, Vec<PathBuf>> {
    // A panic while holding the lock cannot leave the list itself inconsistent.
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes every temporary output not yet renamed, and keeps the registry locked so that no
/// rename can start afterwards: for a signal handler that exits next.
pub fn remove_pending() {
    let mut list = pending();
    for p in list.drain(..) {
        let _ = std::fs::remove_file(&p);
    }
    // Held until the process exits: a rename racing the exit must not begin.
    std::mem::forget(list);
}

/// What kind of non-regular file `meta` describes, for messages.
fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Refuses an input that is not a regular file (a FIFO with no writer would block its
/// `open` for ever, a device never ends), before anything opens it.
pub fn check_input(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return Ok(());
    }
    Err(Error::Format {
        path: path.into(),
        msg: format!("is {}, not a regular file", kind(&meta)),
    })
}

/// The path `p` resolves to, whether or not it exists: its canonical directory and its name.
fn resolved(p: &Path) -> Result<PathBuf> {
    if let Ok(c) = std::fs::canonicalize(p) {
        return Ok(c);
    }
    let name = p.file_name().ok_or_else(|| Error::Format {
        path: p.into(),
        msg: "names no file".into(),
    })?;
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(dir).map_err(|e| Error::Format {
        path: p.into(),
        msg: match e.kind() {
            std::io::ErrorKind::NotFound => "its directory does not exist".into(),
            _ => format!("its directory cannot be used ({})", plain_os_error(e)),
        },
    })?;
    Ok(dir.join(name))
}

/// Checks that each of `outputs` may be written: its directory exists and is a directory, it
/// is not (a link to) any of `inputs` or another output, and if it exists it is a regular
/// file. Call before reading or computing anything, so a bad path fails at once.
pub fn check_outputs(inputs: &[&Path], outputs: &[&Path]) -> Result<()> {
    let ins = inputs
        .iter()
        .map(|p| resolved(p))
        .collect::<Result<Vec<_>>>()?;
    let mut seen: Vec<(PathBuf, &Path)> = Vec::with_capacity(outputs.len());
    for &out in outputs {
        let r = resolved(out)?;
        if let Some(dir) = r.parent()
            && !dir.is_dir()
        {
            return Err(Error::Format {
                path: out.into(),
                msg: "its directory does not exist".into(),
            });
        }
        if let Some(i) = ins.iter().position(|i| *i == r) {
            return Err(Error::Format {
                path: out.into(),
                msg: format!(
                    "the output would overwrite the input {}; choose another path",
                    inputs[i].display()
                ),
            });
        }
        if let Some((_, other)) = seen.iter().find(|(s, _)| *s == r) {
            return Err(Error::Format {
                path: out.into(),
                msg: format!(
                    "is also the output {}; two outputs cannot share a path",
                    other.display()
                ),
            });
        }
        if let Ok(meta) = std::fs::metadata(out)
            && !meta.is_file()
        {
            return Err(Error::Format {
                path: out.into(),
                msg: format!(
                    "is {}; wgquant writes only regular files and would replace it",
                    kind(&meta)
                ),
            });
        }
        seen.push((r, out));
    }
    Ok(())
}

/// An output being written under a temporary name beside its final path.
pub struct TempOutput {
    tmp: Option<tempfile::NamedTempFile>,
    target: PathBuf,
}

impl TempOutput {
    /// Creates the temporary file for `target` in `target`'s directory, with the mode of the
    /// file it will replace or, for a new file, 0666 less the umask (what `open(2)` gives).
    pub fn create(target: &Path) -> Result<Self> {
        // Every writer comes through here: the path checks hold even for a caller that
        // skipped [`check_outputs`].
        check_outputs(&[], &[target])?;
        let io = |e: std::io::Error| Error::io(target, plain_os_error(e));
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let existing = std::fs::metadata(target).ok().filter(|m| m.is_file());
        let mut list = pending();
        let tmp = tempfile::Builder::new()
            .prefix(".wgquant-")
            .suffix(".partial")
            .permissions(Permissions::from_mode(0o666))
            .tempfile_in(&dir)
            .map_err(io)?;
        list.push(tmp.path().to_path_buf());
        drop(list);
        let out = Self {
            tmp: Some(tmp),
            target: target.into(),
        };
        if let (Some(meta), Some(tmp)) = (existing, &out.tmp) {
            let mode = meta.permissions().mode() & 0o7777;
            tmp.as_file()
                .set_permissions(Permissions::from_mode(mode))
                .map_err(io)?;
        }
        Ok(out)
    }

    /// The final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The open temporary file.
    pub fn file(&self) -> Result<&std::fs::File> {
        self.tmp
            .as_ref()
            .map(tempfile::NamedTempFile::as_file)
            .ok_or_else(|| Error::param("output", "already renamed"))
    }

    /// The temporary file's own path (for writers that open by path).
    pub fn temp_path(&self) -> Result<&Path> {
        self.tmp
            .as_ref()
            .map(tempfile::NamedTempFile::path)
            .ok_or_else(|| Error::param("output", "already renamed"))
    }

    /// A second handle on the temporary file.
    pub fn reopen(&self) -> Result<std::fs::File> {
        self.file()?
            .try_clone()
            .map_err(|e| Error::io(&self.target, plain_os_error(e)))
    }

    /// Renames it to its final name.
    pub fn persist(self) -> Result<()> {
        persist_all(vec![self])
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let path = tmp.path().to_path_buf();
            let mut list = pending();
            // Removed while the list is locked: a signal handler never sees a stale entry.
            drop(tmp);
            list.retain(|p| *p != path);
        }
    }
}

/// Renames every output to its final name, in order, under the registry's lock: a signal
/// arriving meanwhile waits, then finds nothing left to remove. On an error the outputs not
/// yet renamed are removed; those already renamed stay (each is complete).
pub fn persist_all(outputs: Vec<TempOutput>) -> Result<()> {
    let mut list = pending();
    let mut result = Ok(());
    for mut out in outputs {
        let Some(tmp) = out.tmp.take() else { continue };
        let path = tmp.path().to_path_buf();
        list.retain(|p| *p != path);
        if result.is_err() {
            drop(tmp);
            continue;
        }
        if let Err(e) = tmp.persist(&out.target) {
            result = Err(Error::io(&out.target, plain_os_error(e.error)));
        }
    }
    result
}

/// Writes `text` to `path` through a temporary file.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    prepare_text(path, text)?.persist()
}

/// `text` written into a temporary file for `path`, not yet renamed.
pub fn prepare_text(path: &Path, text: &str) -> Result<TempOutput> {
    use std::io::Write;
    let out = TempOutput::create(path)?;
    let mut f = out.file()?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(path, plain_os_error(e)))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_inputs_devices_and_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.safetensors");
        std::fs::write(&a, b"x").unwrap();
        let b = dir.path().join("b.safetensors");
        assert!(check_outputs(&[&a], &[&b]).is_ok());
        assert!(check_outputs(&[&a], &[&a]).is_err());
        assert!(check_outputs(&[&a], &[&b, &b]).is_err());
        assert!(check_outputs(&[&a], &[Path::new("/dev/null")]).is_err());
        assert!(check_outputs(&[&a], &[&dir.path().join("no/such/dir/x")]).is_err());
        // The same file through a different spelling.
        let dotted = dir.path().join(".").join("a.safetensors");
        assert!(check_outputs(&[&a], &[&dotted]).is_err());
    }

    #[test]
    fn temporaries_are_registered_until_renamed_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t.txt");
        let out = prepare_text(&t, "hello").unwrap();
        assert!(pending().iter().any(|p| p.starts_with(dir.path())));
        out.persist().unwrap();
        assert!(!pending().iter().any(|p| p.starts_with(dir.path())));
        assert_eq!(std::fs::read_to_string(&t).unwrap(), "hello");
        let dropped = prepare_text(&dir.path().join("u.txt"), "x").unwrap();
        drop(dropped);
        assert!(!pending().iter().any(|p| p.starts_with(dir.path())));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
