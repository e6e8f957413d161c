//! A writer for the `newc` cpio format the kernel unpacks as an initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst). Uncompressed: QEMU loads it into
//! L1's memory at host speed, while decompressing under TCG would cost emulated CPU time.

use std::io::{self, Read, Write};

const TRAILER: &str = "TRAILER!!!";

/// Streams entries into a cpio archive; [`CpioWriter::finish`] writes the trailer.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn header(&mut self, name: &str, mode: u32, nlink: u32, size: u64) -> io::Result<()> {
        let size = u32::try_from(size)
            .map_err(|_| io::Error::other(format!("{name} is over 4 GiB: too big for cpio")))?;
        let namesize = name.len() as u32 + 1;
        let fields = [self.ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0];
        self.ino += 1;
        let mut head = String::with_capacity(110);
        head.push_str("070701");
        for f in fields {
            head.push_str(&format!("{f:08x}"));
        }
        self.put(head.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }

    /// A directory (`name` without a leading slash).
    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.header(name, libc::S_IFDIR | (perm & 0o7777), 2, 0)
    }

    /// A symbolic link pointing at `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.header(name, libc::S_IFLNK | 0o777, 1, target.len() as u64)?;
        self.put(target.as_bytes())?;
        self.pad()
    }

    /// A regular file of exactly `size` bytes read from `data`.
    pub fn file(&mut self, name: &str, perm: u32, size: u64, data: &mut dyn io::Read) -> io::Result<()> {
        self.header(name, libc::S_IFREG | (perm & 0o7777), 1, size)?;
        let copied = io::copy(&mut Read::take(data, size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::other(format!(
                "{name} changed while being archived ({copied} of {size} bytes)"
            )));
        }
        self.written += copied;
        self.pad()
    }

    /// Writes the trailer and hands back the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(TRAILER, 0, 1, 0)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn archive_lists_with_cpio() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        w.file("bin/hello", 0o755, 5, &mut &b"hello"[..]).unwrap();
        w.symlink("bin/sh", "hello").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.cpio");
        std::fs::write(&archive, &bytes).unwrap();
        let out = Command::new("cpio")
            .args(["-i", "-d", "--quiet", "-F"])
            .arg(&archive)
            .current_dir(dir.path())
            .output()
            .expect("cpio is not installed: run `apt-get install cpio`");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read(dir.path().join("bin/hello")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_link(dir.path().join("bin/sh")).unwrap().to_str(),
            Some("hello")
        );
    }

    #[test]
    fn refuses_short_data() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("f", 0o644, 10, &mut &b"abc"[..]).is_err());
    }
}
