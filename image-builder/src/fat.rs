//! The FAT firmware partition, written in-process with `fatfs` straight into
//! its byte range of the image: fixed volume id, fixed timestamps, files in
//! sorted order, so the same inputs give the same bytes.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use fatfs::{Date, DateTime, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider};

/// A window onto `[start, start + len)` of a file, as a seekable stream.
pub struct Slice<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a> Slice<'a> {
    pub fn new(file: &'a File, start: u64, len: u64) -> Slice<'a> {
        Slice { file, start, len, pos: 0 }
    }
}

impl Read for Slice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.len.saturating_sub(self.pos) as usize);
        let n = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Slice<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.len.saturating_sub(self.pos) as usize);
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let n = self.file.write_at(&buf[..n], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Slice<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::End(d) => self.len as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if pos < 0 || pos > self.len as i128 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "seek outside the partition"));
        }
        self.pos = pos as u64;
        Ok(self.pos)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot format the firmware partition: {0}")]
    Format(io::Error),
    #[error("cannot write {name} to the firmware partition: {source}")]
    Write { name: String, source: io::Error },
    #[error(
        "the firmware files ({need_kib} KiB) do not fit the {size_mib} MiB firmware partition; \
         raise image.firmwareSizeMiB in the host facts"
    )]
    TooLarge { need_kib: u64, size_mib: u64 },
}

/// The clock every FAT timestamp comes from: `SOURCE_DATE_EPOCH`, clamped to
/// FAT's range (1980-2107).
#[derive(Debug)]
struct FixedClock(DateTime);

impl TimeProvider for FixedClock {
    fn get_current_date(&self) -> Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> DateTime {
        self.0
    }
}

pub fn fat_datetime(epoch: u64) -> DateTime {
    let secs = epoch.clamp(315_532_800, 4_354_819_198);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u16;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u16;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as u16;
    DateTime {
        date: Date { year, month, day },
        time: Time {
            hour: (rem / 3600) as u16,
            min: (rem / 60 % 60) as u16,
            sec: (rem % 60) as u16,
            millis: 0,
        },
    }
}

/// One file for the partition; `name` may contain `/` for subdirectories.
pub struct FatFile<'a> {
    pub name: &'a str,
    pub content: &'a [u8],
}

/// Formats `[start, start + len)` of `image` and writes `files` into it.
pub fn write_partition(
    image: &File,
    start: u64,
    len: u64,
    label: &str,
    volume_id: u32,
    epoch: u64,
    files: &mut [FatFile<'_>],
) -> Result<(), Error> {
    let need: u64 = files.iter().map(|f| f.content.len() as u64 + 4096).sum();
    if need > len * 9 / 10 {
        return Err(Error::TooLarge { need_kib: need / 1024, size_mib: len >> 20 });
    }
    let mut padded = [b' '; 11];
    padded[..label.len()].copy_from_slice(label.as_bytes());
    fatfs::format_volume(
        Slice::new(image, start, len),
        FormatVolumeOptions::new().volume_id(volume_id).volume_label(padded),
    )
    .map_err(Error::Format)?;
    // One leaked clock per build: fatfs wants a 'static time provider.
    let clock: &'static FixedClock = Box::leak(Box::new(FixedClock(fat_datetime(epoch))));
    let fs = FileSystem::new(
        Slice::new(image, start, len),
        FsOptions::new().time_provider(clock).update_accessed_date(false),
    )
    .map_err(Error::Format)?;
    files.sort_by(|a, b| a.name.cmp(b.name));
    let root = fs.root_dir();
    for f in files.iter() {
        let write_err = |source| Error::Write { name: f.name.to_string(), source };
        let mut parts: Vec<&str> = f.name.split('/').collect();
        let leaf = parts.pop().unwrap_or_default();
        let mut dir = root.clone();
        for p in parts {
            dir = match dir.open_dir(p) {
                Ok(d) => d,
                Err(_) => dir.create_dir(p).map_err(write_err)?,
            };
        }
        let mut out = dir.create_file(leaf).map_err(write_err)?;
        out.truncate().map_err(write_err)?;
        out.write_all(f.content).map_err(write_err)?;
        out.flush().map_err(write_err)?;
    }
    drop(root);
    fs.unmount().map_err(Error::Format)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_epoch() {
        let d = fat_datetime(0);
        assert_eq!((d.date.year, d.date.month, d.date.day), (1980, 1, 1));
        let d = fat_datetime(1_700_000_000); // 2023-11-14 22:13:20 UTC
        assert_eq!((d.date.year, d.date.month, d.date.day), (2023, 11, 14));
        assert_eq!((d.time.hour, d.time.min, d.time.sec), (22, 13, 20));
    }

    #[test]
    fn writes_and_reads_back() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(32 << 20).unwrap();
        let mut files = [
            FatFile { name: "overlays/a.dtbo", content: b"dtbo" },
            FatFile { name: "config.txt", content: b"arm_64bit=1\n" },
        ];
        write_partition(&f, 1 << 20, 30 << 20, "FIRMWARE", 0x1234_5678, 0, &mut files).unwrap();
        let fs = FileSystem::new(Slice::new(&f, 1 << 20, 30 << 20), FsOptions::new()).unwrap();
        assert_eq!(fs.volume_id(), 0x1234_5678);
        let mut s = String::new();
        fs.root_dir().open_file("config.txt").unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "arm_64bit=1\n");
    }
}
