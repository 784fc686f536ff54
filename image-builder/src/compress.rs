//! `labimg build --compress zstd`: the finished image as one zstd frame for
//! distribution, compressed on every core, the same bytes on every machine.
//!
//! The image is compressed after it is complete rather than while it is
//! written: mkfs.ext4, debugfs and the normalisation write it at scattered
//! offsets, and the block map and checksums describe the finished image, so
//! one streaming pass at the end is the simple way. The holes the block map
//! knows are fed as zeros from memory instead of being read.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use lab_cli::progress::Progress;
use sha2::{Digest, Sha256};

/// zstd's own range. Level 0 means "the library's default" to zstd, which
/// would make the manifest's level a lie; negative (fast) levels trade too
/// much size for a one-off compression of an image made to be downloaded.
pub const LEVELS: std::ops::RangeInclusive<i32> = 1..=22;

/// The level for an SD image made to be downloaded and flashed many times.
/// Measured with bench_compress on a 889 MiB image holding 508 MiB of real
/// binaries and libraries from /usr (2 cores, zstd 1.5.7; docs/benchmarks.md):
///
/// | level | .zst      | of the data | compress time |
/// |-------|-----------|-------------|---------------|
/// | 3     | 175.3 MiB | 1 : 2.90    | 1.6 s         |
/// | 9     | 151.5 MiB | 1 : 3.35    | 5.8 s         |
/// | 19    | 133.4 MiB | 1 : 3.81    | 141 s         |
///
/// 9 is 14 % smaller than 3 for about 4 s more per half GiB: at a home
/// uplink's few MB/s, one download already wins the time back. 19 is 12 %
/// smaller again but 24 times slower (about 10 minutes for a 2 GiB closure),
/// which only pays after dozens of downloads. Decompression (what flashing
/// waits for) is about as fast at every level. NixOS's own sd-image runs
/// `zstd` at its default, 3: pass `--compress-level 3` for that.
pub const DEFAULT_LEVEL: i32 = 9;

/// What the compressed image is: written to the manifest and the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the image to compress it failed: {0}")]
    Read(io::Error),
    #[error("writing the compressed image failed (is the disk full?): {0}")]
    Write(io::Error),
    #[error(transparent)]
    Interrupted(#[from] lab_cli::interrupt::Interrupted),
}

/// How many zstd workers compress: every core, as `zstd -T0`.
///
/// The bytes do not depend on this. In zstd's multi-threaded mode
/// (nbWorkers >= 1) the input is cut into jobs whose size follows from the
/// level's parameters alone, and each job is compressed against the same
/// window whichever worker takes it; only nbWorkers = 0 (the single-threaded
/// mode) writes other bytes, so at least one worker is always asked for.
/// `the_bytes_do_not_depend_on_the_worker_count` below checks it.
pub fn workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32).max(1)
}

/// The zstd library's version: the compressed bytes are reproducible for a
/// given version and level, so the manifest records both.
pub fn library_version() -> String {
    zstd::zstd_safe::version_string().to_string()
}

/// Compresses the `size` bytes of `image` into `out` as one zstd frame that
/// declares its content size (so `labimg flash` and `zstd -l` know it) and
/// carries a checksum (so `zstd -d` proves a download whole). `data` are the
/// byte ranges holding data, in order; everything else is a hole and is fed
/// as zeros. Ctrl-C is checked between pieces.
pub fn zstd_image(
    image: &File,
    size: u64,
    data: &[(u64, u64)],
    level: i32,
    workers: u32,
    out: impl Write,
    progress: Progress,
) -> Result<Compressed, Error> {
    let sink =
        Hashing { inner: io::BufWriter::with_capacity(PIECE, out), hash: Sha256::new(), bytes: 0 };
    let mut enc = zstd::stream::write::Encoder::new(sink, level).map_err(Error::Write)?;
    enc.multithread(workers.max(1)).map_err(Error::Write)?;
    enc.include_checksum(true).map_err(Error::Write)?;
    enc.include_contentsize(true).map_err(Error::Write)?;
    enc.set_pledged_src_size(Some(size)).map_err(Error::Write)?;

    let bar = progress.bytes("compress", size);
    let zeros = vec![0u8; PIECE];
    let mut buf = vec![0u8; PIECE];
    let mut at = 0u64;
    let spans = data.iter().copied().chain(std::iter::once((size, size)));
    for (start, end) in spans {
        while at < start {
            lab_cli::interrupt::check()?;
            let n = (start - at).min(PIECE as u64) as usize;
            enc.write_all(&zeros[..n]).map_err(Error::Write)?;
            at += n as u64;
            bar.inc(n as u64);
        }
        while at < end {
            lab_cli::interrupt::check()?;
            let n = (end - at).min(PIECE as u64) as usize;
            image.read_exact_at(&mut buf[..n], at).map_err(Error::Read)?;
            enc.write_all(&buf[..n]).map_err(Error::Write)?;
            at += n as u64;
            bar.inc(n as u64);
        }
    }
    let mut sink = enc.finish().map_err(Error::Write)?;
    sink.inner.flush().map_err(Error::Write)?;
    bar.finish_and_clear();
    Ok(Compressed { size: sink.bytes, sha256: hex::encode(sink.hash.finalize()) })
}

/// Pieces read and fed to the encoder: large enough that every worker gets
/// a whole job's worth quickly, small enough to stay out of the way.
const PIECE: usize = 4 << 20;

/// Passes writes through, hashing and counting what went out: the .zst's
/// sha256 and size without reading it back.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sparse file of `mib` MiB: half of each MiB compressible text-like
    /// bytes, some incompressible, and holes.
    fn sample(mib: u64) -> (File, Vec<(u64, u64)>) {
        let f = tempfile::tempfile().unwrap();
        f.set_len(mib << 20).unwrap();
        let mut data = Vec::new();
        let mut x: u64 = 0x5eed;
        for i in 0..mib {
            if i % 4 == 3 {
                continue; // a hole
            }
            let mut chunk = vec![0u8; 1 << 19];
            for (j, b) in chunk.iter_mut().enumerate() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = if j % 3 == 0 { x as u8 } else { b"labimg nixpi "[j % 13] };
            }
            f.write_all_at(&chunk, i << 20).unwrap();
            data.push((i << 20, (i << 20) + chunk.len() as u64));
        }
        (f, data)
    }

    fn compress(f: &File, size: u64, data: &[(u64, u64)], workers: u32) -> (Vec<u8>, Compressed) {
        let mut out = Vec::new();
        let c = zstd_image(f, size, data, 3, workers, &mut out, Progress::hidden()).unwrap();
        (out, c)
    }

    #[test]
    fn round_trips_and_reports_what_it_wrote() {
        let (f, data) = sample(6);
        let size = 6 << 20;
        let (out, c) = compress(&f, size, &data, 2);
        assert_eq!(c.size, out.len() as u64);
        assert_eq!(c.sha256, hex::encode(Sha256::digest(&out)));
        assert_eq!(zstd::zstd_safe::get_frame_content_size(&out).unwrap(), Some(size));
        let mut whole = vec![0u8; size as usize];
        f.read_exact_at(&mut whole, 0).unwrap();
        assert!(zstd::decode_all(&out[..]).unwrap() == whole);
    }

    #[test]
    fn the_bytes_do_not_depend_on_the_worker_count() {
        // Level 3 cuts jobs of a few MiB: 40 MiB gives several per worker.
        let (f, data) = sample(40);
        let size = 40 << 20;
        let (one, _) = compress(&f, size, &data, 1);
        for workers in [2, 3, 8] {
            let (other, _) = compress(&f, size, &data, workers);
            assert!(one == other, "{workers} workers wrote other bytes than 1");
        }
    }
}
