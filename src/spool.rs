//! A write-then-read byte buffer: up to a fixed number of bytes in memory, the rest in an
//! unlinked temporary file in `$TMPDIR`. It holds what a function prints while its request body
//! is still being read (tiny_http cannot answer before that; see `http_server`), and whole
//! bodies in serializing mode, in bounded memory and without truncating anything.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) struct Spool {
    memory: Vec<u8>,
    memory_limit: usize,
    file: Option<File>,
    len: u64,
}

impl Spool {
    pub(crate) fn new(memory_limit: usize) -> Spool {
        Spool { memory: Vec::new(), memory_limit, file: None, len: 0 }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Everything fits in memory (and can be borrowed whole with `as_slice`).
    pub(crate) fn in_memory(&self) -> bool {
        self.file.is_none()
    }

    pub(crate) fn as_slice(&self) -> Option<&[u8]> {
        self.in_memory().then_some(self.memory.as_slice())
    }

    pub(crate) fn push(&mut self, data: &[u8]) -> io::Result<()> {
        if self.file.is_none() && self.memory.len() + data.len() <= self.memory_limit {
            self.memory.extend_from_slice(data);
        } else {
            let file = match &mut self.file {
                Some(f) => f,
                None => self.file.insert(temp_file()?),
            };
            file.write_all(data)?;
        }
        self.len += data.len() as u64;
        Ok(())
    }

    /// Reads everything back, in order: memory first, then the file.
    pub(crate) fn reader(&mut self) -> io::Result<SpoolReader<'_>> {
        if let Some(f) = &mut self.file {
            f.seek(SeekFrom::Start(0))?;
        }
        Ok(SpoolReader { memory: &self.memory, file: self.file.as_mut() })
    }
}

pub(crate) struct SpoolReader<'a> {
    memory: &'a [u8],
    file: Option<&'a mut File>,
}

impl Read for SpoolReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.memory.is_empty() {
            let n = self.memory.len().min(buf.len());
            buf[..n].copy_from_slice(&self.memory[..n]);
            self.memory = &self.memory[n..];
            return Ok(n);
        }
        match &mut self.file {
            Some(f) => f.read(buf),
            None => Ok(0),
        }
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// An anonymous file in `$TMPDIR`: `O_TMPFILE` where the filesystem supports it, else a file
/// that is unlinked right after it is created. Either way nothing is left behind.
fn temp_file() -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    let anonymous = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(&dir);
    if let Ok(f) = anonymous {
        return Ok(f);
    }
    for _ in 0..16 {
        let name = dir.join(format!(
            ".fwatchdog-spool-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&name) {
            Ok(f) => {
                let _ = std::fs::remove_file(&name);
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(io::Error::new(e.kind(), format!("temporary file in {}: {e}", dir.display())));
            }
        }
    }
    Err(io::Error::other("cannot create a temporary file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_to_a_file_and_reads_back_in_order() {
        let mut s = Spool::new(8);
        s.push(b"hello").expect("push");
        assert!(s.in_memory());
        s.push(b" spooled").expect("push");
        s.push(b" world").expect("push");
        assert!(!s.in_memory());
        assert_eq!(s.len(), 19);
        let mut out = Vec::new();
        s.reader().expect("reader").read_to_end(&mut out).expect("read");
        assert_eq!(out, b"hello spooled world");
        let mut again = Vec::new();
        s.reader().expect("reader").read_to_end(&mut again).expect("read");
        assert_eq!(again, out, "reading twice starts over");
    }

    #[test]
    fn small_content_stays_in_memory() {
        let mut s = Spool::new(1024);
        s.push(&[7; 1000]).expect("push");
        assert_eq!(s.as_slice().map(<[u8]>::len), Some(1000));
    }
}
