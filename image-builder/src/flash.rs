//! `labimg flash` and `labimg verify`: write an image to a card or stick
//! (only its mapped blocks), read every written range back past the page
//! cache and compare checksums; refuse every device that could be the wrong
//! one before a single byte is written.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::bmap::{self, Bmap, ParseError};
use indicatif::ProgressBar;
use lab_blockdev::{self, Disk};
use lab_cli::interrupt;
use lab_cli::progress::Progress;

/// Large, aligned I/O: 8 MiB per request keeps a USB stick's queue full.
const CHUNK: usize = 8 << 20;
const ALIGN: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read image {path}: {source}. If writing had started, the target is incomplete: run the command again")]
    Image { path: PathBuf, source: io::Error },
    #[error(
        "block map {bmap} does not belong to {image}: bytes {start}-{end} of the image itself differ from the map's \
         checksum, so the target now holds this image but cannot be verified with that map. \
         Use the .bmap built with this image, or --no-bmap"
    )]
    WrongMap { image: PathBuf, bmap: PathBuf, start: u64, end: u64 },
    #[error("{path} is empty: nothing to write")]
    Empty { path: PathBuf },
    #[error("verification of {path} was interrupted; the write itself had completed. Run `labimg verify` to check it")]
    VerifyInterrupted { path: PathBuf },
    #[error("cannot read block map {path}: {source}")]
    BmapRead { path: PathBuf, source: io::Error },
    #[error("block map {path}: {source}")]
    Bmap { path: PathBuf, source: ParseError },
    #[error("block map {bmap} describes a {bmap_size}-byte image, but {image} is {image_size} bytes; they do not belong together")]
    BmapMismatch { bmap: PathBuf, bmap_size: u64, image: PathBuf, image_size: u64 },
    #[error("the size of compressed image {path} is unknown (no block map and no size in the zstd frame); pass --bmap")]
    UnknownSize { path: PathBuf },
    #[error("{path} does not exist; `labimg devices` lists the removable disks")]
    NoTarget { path: PathBuf },
    #[error("{path} is neither a block device nor a regular file")]
    NotADisk { path: PathBuf },
    #[error(transparent)]
    Device(#[from] lab_blockdev::Error),
    #[error("refusing {path}: it holds the running system ({mounts}). Pick another device (`labimg devices`)")]
    SystemDisk { path: PathBuf, mounts: String },
    #[error("refusing {path}: it is mounted ({mounts}); unmount it first (for example `umount {path}*`)")]
    Mounted { path: PathBuf, mounts: String },
    #[error("refusing {path}: it is not a removable disk ({what}); if it really is the target, pass --allow-fixed")]
    Fixed { path: PathBuf, what: String },
    #[error("refusing {path}: it holds {device_size} bytes, the image needs {image_size}")]
    TooSmall { path: PathBuf, device_size: u64, image_size: u64 },
    #[error("{path} changed while you were asked ({what}): nothing was written. Check which device is which (`labimg devices`) and run the command again")]
    Changed { path: PathBuf, what: String },
    #[error("nothing was written to {path}: {source}")]
    NotConfirmed { path: PathBuf, source: lab_cli::prompt::Declined },
    #[error("cannot open {path} for writing: {source}{hint}")]
    Open { path: PathBuf, source: io::Error, hint: &'static str },
    #[error("writing {path} failed at byte {offset}: {source}. {path} is incomplete: run the command again")]
    Write { path: PathBuf, offset: u64, source: io::Error },
    #[error("reading {path} back failed at byte {offset}: {source}")]
    ReadBack { path: PathBuf, offset: u64, source: io::Error },
    #[error(
        "verification failed: {path} differs from the image in blocks {first}-{last} (bytes {start}-{end}); \
         the medium may be failing or counterfeit. Write it again, or try another card"
    )]
    Mismatch { path: PathBuf, first: u64, last: u64, start: u64, end: u64 },
    #[error("interrupted after {written} of {total} bytes: {path} is incomplete and will not boot; run the same command again")]
    Interrupted { path: PathBuf, written: u64, total: u64 },
}

impl lab_cli::Classify for Error {
    fn class(&self) -> lab_cli::Class {
        use lab_cli::Class;
        match self {
            Error::Mismatch { .. } => Class::Mismatch,
            Error::Interrupted { .. } | Error::VerifyInterrupted { .. } => Class::Interrupted,
            Error::SystemDisk { .. }
            | Error::Mounted { .. }
            | Error::Fixed { .. }
            | Error::TooSmall { .. }
            | Error::Changed { .. }
            | Error::NotConfirmed { .. } => Class::Refused,
            _ => Class::Failure,
        }
    }
}

/// Where the image's bytes come from.
enum Source {
    Raw(File),
    Zstd(zstd::stream::read::Decoder<'static, io::BufReader<File>>),
}

/// An image and the ranges of it that must be written.
pub struct Image {
    pub path: PathBuf,
    pub size: u64,
    pub bmap_path: Option<PathBuf>,
    /// Byte ranges to write, with their sha256 when a block map gives it.
    pub ranges: Vec<(u64, u64, Option<String>)>,
    pub how: &'static str,
    source: Source,
}

fn is_zstd(path: &Path) -> io::Result<bool> {
    let mut magic = [0u8; 4];
    let n = File::open(path)?.read(&mut magic)?;
    Ok(n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd])
}

/// The block map that goes with `image`: `IMAGE.bmap`, or for `X.img.zst`
/// also `X.img.bmap`.
fn find_bmap(image: &Path) -> Option<PathBuf> {
    let s = image.to_string_lossy();
    let mut candidates = vec![PathBuf::from(format!("{s}.bmap"))];
    for ext in [".zst", ".zstd"] {
        if let Some(base) = s.strip_suffix(ext) {
            candidates.push(PathBuf::from(format!("{base}.bmap")));
        }
    }
    candidates.into_iter().find(|p| p.is_file())
}

impl Image {
    /// Opens an image; `bmap` overrides the block map found beside it, and
    /// `no_bmap` ignores any.
    pub fn open(path: &Path, bmap: Option<&Path>, no_bmap: bool) -> Result<Image, Error> {
        let img_err = |source| Error::Image { path: path.to_path_buf(), source };
        let compressed = is_zstd(path).map_err(img_err)?;
        let bmap_path =
            if no_bmap { None } else { bmap.map(Path::to_path_buf).or_else(|| find_bmap(path)) };
        let map = match &bmap_path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|source| Error::BmapRead { path: p.clone(), source })?;
                Some(Bmap::parse(&text).map_err(|source| Error::Bmap { path: p.clone(), source })?)
            }
            None => None,
        };
        let file = File::open(path).map_err(img_err)?;
        let (source, size) = if compressed {
            let declared = {
                let mut head = vec![0u8; 18];
                let n = File::open(path).and_then(|mut f| f.read(&mut head)).map_err(img_err)?;
                zstd::zstd_safe::get_frame_content_size(&head[..n]).ok().flatten()
            };
            let size = match (&map, declared) {
                (Some(m), _) => m.image_size,
                (None, Some(s)) => s,
                (None, None) => return Err(Error::UnknownSize { path: path.to_path_buf() }),
            };
            let dec = zstd::stream::read::Decoder::new(file).map_err(img_err)?;
            (Source::Zstd(dec), size)
        } else {
            let size = file.metadata().map_err(img_err)?.len();
            (Source::Raw(file), size)
        };
        if size == 0 {
            return Err(Error::Empty { path: path.to_path_buf() });
        }
        if let Some(m) = &map {
            if m.image_size != size {
                return Err(Error::BmapMismatch {
                    bmap: bmap_path.clone().unwrap_or_default(),
                    bmap_size: m.image_size,
                    image: path.to_path_buf(),
                    image_size: size,
                });
            }
        }
        let (ranges, how) = match (&map, &source) {
            (Some(m), _) => (
                m.ranges
                    .iter()
                    .map(|r| {
                        let (s, e) = m.span(r);
                        (s, e, Some(r.sha256.clone()))
                    })
                    .collect(),
                "block map",
            ),
            (None, Source::Raw(f)) => (
                bmap::data_blocks(f, size)
                    .map_err(img_err)?
                    .into_iter()
                    .map(|(first, last)| {
                        (first * bmap::BLOCK_SIZE, ((last + 1) * bmap::BLOCK_SIZE).min(size), None)
                    })
                    .collect(),
                "holes of the image file",
            ),
            (None, Source::Zstd(_)) => {
                (vec![(0, size, None)], "every block (compressed, no block map)")
            }
        };
        Ok(Image { path: path.to_path_buf(), size, bmap_path, ranges, how, source })
    }

    pub fn mapped_bytes(&self) -> u64 {
        self.ranges.iter().map(|(s, e, _)| e - s).sum()
    }
}

/// What is about to be written to.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub path: PathBuf,
    pub kind: &'static str,
    pub disk: Option<Disk>,
}

impl Target {
    /// One line for the confirmation prompt.
    pub fn describe(&self) -> String {
        match &self.disk {
            Some(d) => format!(
                "{} ({}): {} {:.1} GB, serial {}{}",
                self.path.display(),
                self.kind,
                d.model.as_deref().unwrap_or("unknown model"),
                d.size as f64 / 1e9,
                d.serial.as_deref().unwrap_or("unknown"),
                d.loop_backing
                    .as_ref()
                    .map(|b| format!(", backed by {}", b.display()))
                    .unwrap_or_default()
            ),
            None => format!("{} (regular file)", self.path.display()),
        }
    }

    /// The name the operator types to confirm (`sdb` for /dev/sdb).
    pub fn confirm_name(&self) -> String {
        self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// Every refusal, before anything is opened for writing.
pub fn preflight(path: &Path, image_size: u64, allow_fixed: bool) -> Result<Target, Error> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A new regular file is fine (VM disks, tests), in an existing directory.
            if path.parent().is_some_and(|p| p.as_os_str().is_empty() || p.is_dir())
                && !path.starts_with("/dev")
            {
                return Ok(Target { path: path.to_path_buf(), kind: "new file", disk: None });
            }
            return Err(Error::NoTarget { path: path.to_path_buf() });
        }
        Err(source) => {
            return Err(Error::Device(lab_blockdev::Error::Stat {
                path: path.to_path_buf(),
                source,
            }))
        }
    };
    if meta.file_type().is_file() {
        return Ok(Target { path: path.to_path_buf(), kind: "regular file", disk: None });
    }
    if !meta.file_type().is_block_device() {
        return Err(Error::NotADisk { path: path.to_path_buf() });
    }
    let disk = lab_blockdev::describe(path)?;
    let mounts = disk.mounts.join(", ");
    if disk.system {
        return Err(Error::SystemDisk { path: path.to_path_buf(), mounts });
    }
    if !disk.mounts.is_empty() {
        return Err(Error::Mounted { path: path.to_path_buf(), mounts });
    }
    let is_loop = disk.loop_backing.is_some() || disk.name.starts_with("loop");
    if !disk.removable && !is_loop && !allow_fixed {
        let what = format!(
            "{} {}",
            disk.transport.as_deref().unwrap_or("internal"),
            disk.model.as_deref().unwrap_or(&disk.name)
        );
        return Err(Error::Fixed { path: path.to_path_buf(), what });
    }
    if disk.size < image_size {
        return Err(Error::TooSmall {
            path: path.to_path_buf(),
            device_size: disk.size,
            image_size,
        });
    }
    let kind = if is_loop {
        "loop device"
    } else if disk.removable {
        "removable disk"
    } else {
        "fixed disk"
    };
    Ok(Target { path: path.to_path_buf(), kind, disk: Some(disk) })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub image: PathBuf,
    pub target: Target,
    pub image_size: u64,
    pub bytes_written: u64,
    pub bytes_skipped: u64,
    pub mapped_from: &'static str,
    pub write_seconds: f64,
    pub verify_seconds: f64,
    pub verify: &'static str,
    pub ranges: usize,
    /// The alignment direct writes used: the device's logical sector, at least 4 KiB.
    pub alignment: u64,
}

/// What `labimg flash --dry-run` prints: the image, the checked target and
/// what would be written to it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub image: PathBuf,
    pub image_size: u64,
    pub mapped_bytes: u64,
    pub ranges: usize,
    pub mapped_from: &'static str,
    pub bmap: Option<PathBuf>,
    pub target: Target,
    pub verify: bool,
    pub dry_run: bool,
}

pub struct FlashOptions<'a> {
    pub verify: bool,
    pub allow_fixed: bool,
    pub progress: Progress,
    /// Asked once every check passed; false stops before anything is written.
    /// Asks the operator (or takes `--yes`); an error declines.
    pub confirm: &'a dyn Fn(&Target) -> Result<(), lab_cli::prompt::Declined>,
}

/// A 4 KiB-aligned buffer, as O_DIRECT reads need.
struct Aligned {
    raw: Vec<u8>,
    offset: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let raw = vec![0u8; len + ALIGN];
        let offset = raw.as_ptr().align_offset(ALIGN);
        Aligned { raw, offset }
    }
    fn slice(&mut self, len: usize) -> &mut [u8] {
        &mut self.raw[self.offset..self.offset + len]
    }
    fn view(&self, len: usize) -> &[u8] {
        &self.raw[self.offset..self.offset + len]
    }
}

/// The parts of a flash after the checks, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Confirm,
    Write,
    Flush,
    Verify,
}

/// Everything the phases share: the image, the target as checked and shown
/// to the operator, the target once taken for writing, and what the write
/// found for the read-back.
struct Ctx<'a> {
    image: &'a mut Image,
    path: &'a Path,
    opts: &'a FlashOptions<'a>,
    target: Target,
    /// The target open for writing: a device held `O_EXCL` from before the
    /// question until the report, or the file created after it.
    out: Option<File>,
    /// The same target opened `O_DIRECT`, where it takes it.
    direct: Option<File>,
    /// The alignment direct writes use: the device's logical sector, at least 4 KiB.
    align: u64,
    /// The write's progress, shown until the data is flushed.
    bar: Option<ProgressBar>,
    /// When writing started: the write's time includes the flush.
    started: Instant,
    written: u64,
    /// Each range's sha256 as the image (or its map) gave it, for the read-back.
    sums: Vec<String>,
    write_seconds: f64,
    verify: &'static str,
    verify_seconds: f64,
}

/// The phases in flash order, each small.
type PhaseFn = fn(&mut Ctx) -> Result<(), Error>;

const PHASES: [(Phase, PhaseFn); 4] = [
    (Phase::Confirm, confirm_phase),
    (Phase::Write, write_phase),
    (Phase::Flush, flush_phase),
    (Phase::Verify, verify_phase),
];

impl<'a> Ctx<'a> {
    /// Every refusal, before anything is opened for writing: where a flash
    /// starts and where its dry run stops.
    fn preflight(
        image: &'a mut Image,
        path: &'a Path,
        opts: &'a FlashOptions<'a>,
    ) -> Result<Ctx<'a>, Error> {
        let target = preflight(path, image.size, opts.allow_fixed)?;
        Ok(Ctx {
            image,
            path,
            opts,
            target,
            out: None,
            direct: None,
            align: ALIGN as u64,
            bar: None,
            started: Instant::now(),
            written: 0,
            sums: Vec::new(),
            write_seconds: 0.0,
            verify: "skipped",
            verify_seconds: 0.0,
        })
    }
}

impl Ctx<'_> {
    /// `--no-verify` skips the read-back.
    fn runs(&self, phase: Phase) -> bool {
        phase != Phase::Verify || self.opts.verify
    }

    fn is_block(&self) -> bool {
        self.target.disk.is_some()
    }

    /// The dry run's answer: what the checks found, nothing opened for writing.
    fn plan(&self) -> Plan {
        let image = &*self.image;
        Plan {
            image: image.path.clone(),
            image_size: image.size,
            mapped_bytes: image.mapped_bytes(),
            ranges: image.ranges.len(),
            mapped_from: image.how,
            bmap: image.bmap_path.clone(),
            target: self.target.clone(),
            verify: self.opts.verify,
            dry_run: true,
        }
    }

    fn report(mut self) -> Report {
        // Held (O_EXCL) until verification is done: the partition re-read
        // wakes automounters, and a mounted card would fail the read-back.
        drop(self.out.take());
        let image = &*self.image;
        Report {
            image: image.path.clone(),
            target: self.target,
            image_size: image.size,
            bytes_written: self.written,
            bytes_skipped: image.size - self.written,
            mapped_from: image.how,
            write_seconds: self.write_seconds,
            verify_seconds: self.verify_seconds,
            verify: self.verify,
            ranges: image.ranges.len(),
            alignment: self.align,
        }
    }
}

/// Every check of a flash, nothing opened for writing: the flash's own
/// preflight, stopped before the first phase that takes the target.
pub fn plan(image: &mut Image, target_path: &Path, opts: &FlashOptions) -> Result<Plan, Error> {
    Ok(Ctx::preflight(image, target_path, opts)?.plan())
}

/// The whole flash: the checks, then each phase in order. Ctrl-C is checked
/// chunk by chunk inside the write (the target is then incomplete) and the
/// read-back (the write had completed); one pressed before the write is
/// reported by its first chunk.
pub fn flash(image: &mut Image, target_path: &Path, opts: &FlashOptions) -> Result<Report, Error> {
    let mut ctx = Ctx::preflight(image, target_path, opts)?;
    for (phase, run) in PHASES {
        if ctx.runs(phase) {
            run(&mut ctx)?;
        }
    }
    Ok(ctx.report())
}

/// `Error::Open` for `path`, naming "busy" when that is why.
fn open_error(path: &Path) -> impl Fn(io::Error) -> Error + '_ {
    move |source| {
        let hint = if source.raw_os_error() == Some(16) {
            " (busy: something has it open or mounted)"
        } else {
            ""
        };
        Error::Open { path: path.to_path_buf(), source, hint }
    }
}

/// The operator is asked about the target as shown, and it is taken for
/// writing only if it is still that one. A block device is held exclusively
/// from before the question until the report: the kernel refuses O_EXCL
/// while anything has it mounted, and nothing can mount it while it is
/// held. A file target is only created once confirmed.
fn confirm_phase(ctx: &mut Ctx) -> Result<(), Error> {
    let path = ctx.path;
    let held = if ctx.is_block() {
        Some(
            OpenOptions::new()
                .write(true)
                .read(true)
                .custom_flags(nix::libc::O_EXCL)
                .open(path)
                .map_err(open_error(path))?,
        )
    } else {
        None
    };
    (ctx.opts.confirm)(&ctx.target)
        .map_err(|source| Error::NotConfirmed { path: path.to_path_buf(), source })?;
    let out = match held {
        Some(f) => {
            // The operator confirmed what was shown; a card swapped or a
            // stick replugged meanwhile must not receive the image.
            same_device(&ctx.target, &f)?;
            f
        }
        None => open_file_target(path)?,
    };
    ctx.out = Some(out);
    Ok(())
}

/// A new file gets no more access than its owner's: the image may hold a
/// host key. An existing file (a VM disk) keeps its length, as a disk
/// would: only the image's mapped ranges are written. A symlink put in its
/// place while the operator was asked is not followed: it could point at a
/// disk no check has seen.
fn open_file_target(path: &Path) -> Result<File, Error> {
    let f = OpenOptions::new()
        .write(true)
        .read(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(open_error(path))?;
    if !f.metadata().map_err(open_error(path))?.is_file() {
        return Err(Error::Changed {
            path: path.to_path_buf(),
            what: "it is no longer a regular file".into(),
        });
    }
    Ok(f)
}

/// The image's mapped ranges written with large writes while another thread
/// reads the image. Aligned chunks go straight to the target (O_DIRECT), so
/// the card is busy while the next chunk is read instead of all at the
/// final fsync; an unaligned tail, or a filesystem without O_DIRECT, goes
/// through the held handle.
fn write_phase(ctx: &mut Ctx) -> Result<(), Error> {
    let path = ctx.path;
    let out = ctx.out.as_ref().expect("the target is taken before it is written");
    let open_err = open_error(path);
    // Opened by path, so it must prove it is the file or device checked.
    let direct = OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(path)
        .ok()
        .filter(|d| same_target(d, out));
    // Direct I/O must be aligned to the device's logical sector as well.
    let mut align = ALIGN as u64;
    if ctx.is_block() {
        let size = lab_blockdev::size(out).map_err(&open_err)?;
        if size < ctx.image.size {
            return Err(Error::TooSmall {
                path: path.to_path_buf(),
                device_size: size,
                image_size: ctx.image.size,
            });
        }
        align = align.max(lab_blockdev::sector_size(out).map_err(&open_err)?);
    } else if out.metadata().map_err(&open_err)?.len() < ctx.image.size {
        out.set_len(ctx.image.size).map_err(&open_err)?;
    }

    ctx.started = Instant::now();
    let bar = ctx.opts.progress.bytes("write", ctx.image.mapped_bytes());
    let (written, sums) = copy_ranges(ctx.image, out, direct.as_ref(), align, path, &bar)?;
    if sums.len() != ctx.image.ranges.len() {
        return Err(Error::Image {
            path: ctx.image.path.clone(),
            source: io::Error::other("the image ended early"),
        });
    }
    (ctx.direct, ctx.align, ctx.bar, ctx.written, ctx.sums) =
        (direct, align, Some(bar), written, sums);
    Ok(())
}

/// Every range of the image to `out` (aligned pieces to `direct`), as a
/// reading thread hands them over: the bytes written and each range's
/// sha256. Ctrl-C stops it between pieces and says the target is incomplete.
fn copy_ranges(
    image: &mut Image,
    out: &File,
    direct: Option<&File>,
    align: u64,
    path: &Path,
    bar: &ProgressBar,
) -> Result<(u64, Vec<String>), Error> {
    let total = image.mapped_bytes();
    let write_err = |offset, source| Error::Write { path: path.to_path_buf(), offset, source };
    // The source is read (and decompressed, and hashed where the map has no
    // checksums) on its own thread while this one writes, so the card never
    // waits for the image and the image never waits for the card.
    let mut written = 0u64;
    let mut computed = Vec::with_capacity(image.ranges.len());
    let image_path = image.path.clone();
    let size = image.size;
    let ranges = image.ranges.clone();
    let source = &mut image.source;
    std::thread::scope(|scope| -> Result<(), Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Piece>(3);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Aligned>();
        scope.spawn(move || read_source(source, size, &ranges, tx, free_rx));
        for piece in rx {
            match piece {
                Piece::Data(pos, buf, len) => {
                    if interrupt::check().is_err() {
                        return Err(Error::Interrupted {
                            path: path.to_path_buf(),
                            written,
                            total,
                        });
                    }
                    let aligned = pos.is_multiple_of(align) && (len as u64).is_multiple_of(align);
                    let fd = direct.filter(|_| aligned).unwrap_or(out);
                    fd.write_all_at(buf.view(len), pos).map_err(|e| write_err(pos, e))?;
                    written += len as u64;
                    bar.inc(len as u64);
                    let _ = free_tx.send(buf);
                }
                Piece::RangeDone(sum) => computed.push(sum),
                Piece::Failed(source) => {
                    return Err(Error::Image { path: image_path.clone(), source })
                }
            }
        }
        Ok(())
    })?;
    Ok((written, computed))
}

/// What was written reaches the medium before it is read back or pulled:
/// both handles synced, then a device's buffers flushed (required; re-reading
/// its partition table only tells the kernel).
fn flush_phase(ctx: &mut Ctx) -> Result<(), Error> {
    let write_err =
        |source| Error::Write { path: ctx.path.to_path_buf(), offset: ctx.written, source };
    if let Some(d) = &ctx.direct {
        d.sync_all().map_err(write_err)?;
    }
    let out = ctx.out.as_ref().expect("the target is taken before it is flushed");
    out.sync_all().map_err(write_err)?;
    if let Some(bar) = ctx.bar.take() {
        bar.finish_and_clear();
    }
    if ctx.is_block() {
        lab_blockdev::flush_buffers(out).map_err(write_err)?;
        let _ = lab_blockdev::reread_partitions(out);
    }
    ctx.write_seconds = ctx.started.elapsed().as_secs_f64();
    Ok(())
}

/// Every written range read back past the page cache and compared by
/// sha256, through the same file or device that was written.
fn verify_phase(ctx: &mut Ctx) -> Result<(), Error> {
    let sums = std::mem::take(&mut ctx.sums);
    let ranges: Vec<(u64, u64, String)> =
        ctx.image.ranges.iter().zip(sums).map(|((s, e, _), sum)| (*s, *e, sum)).collect();
    let started = Instant::now();
    let image: &Image = ctx.image;
    let out = ctx.out.as_ref().expect("the target is taken before it is read back");
    verify_ranges(ctx.path, Some(out), &ranges, ctx.opts.progress).map_err(|e| blame(image, e))?;
    ctx.verify = "ok";
    ctx.verify_seconds = started.elapsed().as_secs_f64();
    Ok(())
}

/// Whether the device `held` is still the one `target` showed the operator:
/// the same node, device number, medium, size, model, serial and loop
/// backing file.
fn same_device(target: &Target, held: &File) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let Some(shown) = &target.disk else {
        return Ok(());
    };
    let changed = |what: String| Error::Changed { path: target.path.clone(), what };
    let held_rdev =
        held.metadata().map_err(|e| changed(format!("cannot stat the open device: {e}")))?.rdev();
    let node_rdev = std::fs::metadata(&target.path)
        .map_err(|e| changed(format!("the node is gone: {e}")))?
        .rdev();
    let number =
        |rdev: u64| format!("{}:{}", nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    if held_rdev != node_rdev || number(held_rdev) != shown.dev {
        return Err(changed(format!("device {} then, {} now", shown.dev, number(held_rdev))));
    }
    let now = lab_blockdev::describe(&target.path)?;
    // A card swapped in the same reader keeps the reader's number, model
    // and serial; the kernel's media sequence number moves on.
    if now.diskseq != shown.diskseq {
        return Err(changed(format!(
            "another medium (sequence {:?} then, {:?} now)",
            shown.diskseq, now.diskseq
        )));
    }
    let size_now =
        lab_blockdev::size(held).map_err(|e| changed(format!("cannot read its size: {e}")))?;
    if size_now != shown.size || now.size != shown.size {
        return Err(changed(format!("{} bytes then, {} now", shown.size, size_now)));
    }
    if (&now.model, &now.serial, &now.loop_backing)
        != (&shown.model, &shown.serial, &shown.loop_backing)
    {
        let name =
            |d: &Disk| Target { path: d.path.clone(), kind: "", disk: Some(d.clone()) }.describe();
        return Err(changed(format!("{} then, {} now", name(shown), name(&now))));
    }
    Ok(())
}

/// Whether two open files are the same file or the same device.
fn same_target(a: &File, b: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino(), a.rdev()) == (b.dev(), b.ino(), b.rdev()),
        _ => false,
    }
}

/// A verify mismatch on a range whose checksum came from the block map:
/// if the image's own bytes do not match the map either, the map belongs
/// to another image, and the medium is not to blame.
fn blame(image: &Image, err: Error) -> Error {
    let Error::Mismatch { start, end, .. } = err else {
        return err;
    };
    let from_map = image.ranges.iter().any(|(s, e, sum)| *s == start && *e == end && sum.is_some());
    if from_map {
        let expected = image.ranges.iter().find(|(s, _, _)| *s == start).and_then(|r| r.2.clone());
        if let Ok(actual) = source_range_sha256(image, start, end) {
            if Some(actual) != expected {
                return Error::WrongMap {
                    image: image.path.clone(),
                    bmap: image.bmap_path.clone().unwrap_or_default(),
                    start,
                    end,
                };
            }
        }
    }
    err
}

/// The sha256 of `[start, end)` of the image, read afresh.
fn source_range_sha256(image: &Image, start: u64, end: u64) -> io::Result<String> {
    let file = File::open(&image.path)?;
    let mut h = Sha256::new();
    let mut reader: Box<dyn Read> = match image.source {
        Source::Raw(_) => {
            let mut f = file;
            io::Seek::seek(&mut f, io::SeekFrom::Start(start))?;
            Box::new(f)
        }
        Source::Zstd(_) => {
            let mut dec = zstd::stream::read::Decoder::new(file)?;
            io::copy(&mut dec.by_ref().take(start), &mut io::sink())?;
            Box::new(dec)
        }
    };
    let mut buf = vec![0u8; CHUNK];
    let mut left = end - start;
    while left > 0 {
        let n = (left as usize).min(CHUNK);
        reader.read_exact(&mut buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hex::encode(h.finalize()))
}

/// What the reading thread hands the writing one.
enum Piece {
    /// Bytes for offset `.0`: the first `.2` bytes of the buffer.
    Data(u64, Aligned, usize),
    /// A range is complete: its sha256.
    RangeDone(String),
    Failed(io::Error),
}

/// Reads every range of the image in order, in CHUNK pieces, recycling the
/// buffers the writer returns. Stops quietly when the writer hangs up.
fn read_source(
    source: &mut Source,
    size: u64,
    ranges: &[(u64, u64, Option<String>)],
    tx: std::sync::mpsc::SyncSender<Piece>,
    free: std::sync::mpsc::Receiver<Aligned>,
) {
    let mut stream_pos = 0u64;
    for (start, end, sum) in ranges {
        // Without a map, the sum verify will check is computed here. With
        // one, the map's sums are trusted on the way (no second pass over
        // the data); a verify mismatch is then traced to map or medium.
        let mut hasher = sum.is_none().then(Sha256::new);
        if let Source::Zstd(dec) = source {
            // Streams only go forward: decompress and drop up to the range.
            if let Err(e) = io::copy(&mut dec.by_ref().take(start - stream_pos), &mut io::sink()) {
                let _ = tx.send(Piece::Failed(e));
                return;
            }
        }
        let mut pos = *start;
        while pos < *end {
            let n = ((end - pos) as usize).min(CHUNK);
            let mut buf = free.try_recv().unwrap_or_else(|_| Aligned::new(CHUNK));
            let read = match source {
                Source::Raw(f) => f.read_exact_at(buf.slice(n), pos),
                Source::Zstd(dec) => dec.read_exact(buf.slice(n)),
            };
            if let Err(e) = read {
                let _ = tx.send(Piece::Failed(e));
                return;
            }
            if let Some(h) = hasher.as_mut() {
                h.update(buf.view(n));
            }
            if tx.send(Piece::Data(pos, buf, n)).is_err() {
                return;
            }
            pos += n as u64;
        }
        stream_pos = *end;
        let sum = sum
            .clone()
            .unwrap_or_else(|| hex::encode(hasher.expect("hashing without a map").finalize()));
        if tx.send(Piece::RangeDone(sum)).is_err() {
            return;
        }
    }
    // A stream must end exactly where the image does: a multi-frame .zst
    // whose first frame declared less, or a map for a larger image, would
    // otherwise be written short and still verify.
    if let Source::Zstd(dec) = source {
        match io::copy(dec, &mut io::sink()) {
            Ok(rest) if stream_pos + rest == size => {}
            Ok(rest) => {
                let msg = format!(
                    "the compressed image holds {} bytes but its size was taken as {size} \
                     (a multi-frame .zst? pass the image's .bmap with --bmap)",
                    stream_pos + rest
                );
                let _ = tx.send(Piece::Failed(io::Error::new(io::ErrorKind::InvalidData, msg)));
            }
            Err(e) => {
                let _ = tx.send(Piece::Failed(e));
            }
        }
    }
}

/// `labimg verify`: the checks of a flash without the write.
pub fn verify(image: &mut Image, target_path: &Path, progress: Progress) -> Result<Report, Error> {
    let started = Instant::now();
    // Ranges without a checksum in the map get theirs from the image itself.
    let sums: Vec<String> = if image.ranges.iter().all(|r| r.2.is_some()) {
        image.ranges.iter().map(|r| r.2.clone().expect("checked")).collect()
    } else {
        let ranges = image.ranges.clone();
        let size = image.size;
        let image_path = image.path.clone();
        let source = &mut image.source;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Piece>(3);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Aligned>();
        let mut sums = Vec::new();
        std::thread::scope(|scope| -> Result<(), Error> {
            scope.spawn(move || read_source(source, size, &ranges, tx, free_rx));
            for piece in rx {
                match piece {
                    Piece::Data(_, buf, _) => drop(free_tx.send(buf)),
                    Piece::RangeDone(sum) => sums.push(sum),
                    Piece::Failed(source) => {
                        return Err(Error::Image { path: image_path.clone(), source })
                    }
                }
            }
            Ok(())
        })?;
        sums
    };
    let ranges: Vec<(u64, u64, String)> =
        image.ranges.iter().zip(sums).map(|((s, e, _), sum)| (*s, *e, sum)).collect();
    verify_ranges(target_path, None, &ranges, progress).map_err(|e| blame(image, e))?;
    Ok(Report {
        image: image.path.clone(),
        target: Target { path: target_path.to_path_buf(), kind: "verified only", disk: None },
        image_size: image.size,
        bytes_written: 0,
        bytes_skipped: 0,
        mapped_from: image.how,
        write_seconds: 0.0,
        verify_seconds: started.elapsed().as_secs_f64(),
        verify: "ok",
        ranges: ranges.len(),
        alignment: ALIGN as u64,
    })
}

/// Reads each range from the target past the page cache (O_DIRECT, or a
/// cache drop where the filesystem has no O_DIRECT) and compares sha256.
/// A thread reads while this one hashes.
fn verify_ranges(
    path: &Path,
    written: Option<&File>,
    ranges: &[(u64, u64, String)],
    progress: Progress,
) -> Result<(), Error> {
    let read_err = |offset, source| Error::ReadBack { path: path.to_path_buf(), offset, source };
    let (file, direct) =
        match OpenOptions::new().read(true).custom_flags(nix::libc::O_DIRECT).open(path) {
            Ok(f) => (f, true),
            Err(_) => {
                let f = File::open(path).map_err(|e| read_err(0, e))?;
                drop_cache(&f);
                (f, false)
            }
        };
    // Reopened by path: it must be what was written, not what the path
    // names now.
    if written.is_some_and(|w| !same_target(&file, w)) {
        return Err(Error::Changed {
            path: path.to_path_buf(),
            what: "it names another file or device than the one written".into(),
        });
    }
    let total: u64 = ranges.iter().map(|(s, e, _)| e - s).sum();
    let bar = progress.bytes("verify", total);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(Aligned, usize), (u64, io::Error)>>(3);
    let (free_tx, free_rx) = std::sync::mpsc::channel::<Aligned>();
    std::thread::scope(|scope| -> Result<(), Error> {
        // Owned here, so returning early (a mismatch) hangs up on the reader.
        let rx = rx;
        let file = &file;
        scope.spawn(move || {
            for (start, end, _) in ranges {
                let mut pos = *start;
                while pos < *end {
                    let want = ((end - pos) as usize).min(CHUNK);
                    // O_DIRECT reads whole aligned blocks; the tail of an
                    // image whose size is not a block multiple is read
                    // rounded up and cut.
                    let len = if direct { want.next_multiple_of(ALIGN) } else { want };
                    let mut buf = free_rx.try_recv().unwrap_or_else(|_| Aligned::new(CHUNK));
                    let chunk = buf.slice(len);
                    let mut got = 0;
                    while got < want {
                        match file.read_at(&mut chunk[got..], pos + got as u64) {
                            Ok(0) => {
                                let eof = io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "the device ends early",
                                );
                                let _ = tx.send(Err((pos + got as u64, eof)));
                                return;
                            }
                            Ok(n) => got += n,
                            Err(e) => {
                                let _ = tx.send(Err((pos + got as u64, e)));
                                return;
                            }
                        }
                    }
                    if tx.send(Ok((buf, want))).is_err() {
                        return;
                    }
                    pos += want as u64;
                }
            }
        });
        for (start, end, expected) in ranges {
            let mut h = Sha256::new();
            let mut pos = *start;
            while pos < *end {
                if interrupt::check().is_err() {
                    return Err(Error::VerifyInterrupted { path: path.to_path_buf() });
                }
                let (mut buf, n) = rx
                    .recv()
                    .map_err(|_| read_err(pos, io::Error::other("reader stopped")))?
                    .map_err(|(at, e)| read_err(at, e))?;
                h.update(&buf.slice(n)[..]);
                pos += n as u64;
                bar.inc(n as u64);
                let _ = free_tx.send(buf);
            }
            if hex::encode(h.finalize()) != *expected {
                return Err(Error::Mismatch {
                    path: path.to_path_buf(),
                    first: start / bmap::BLOCK_SIZE,
                    last: (end - 1) / bmap::BLOCK_SIZE,
                    start: *start,
                    end: *end,
                });
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(())
}

fn drop_cache(f: &File) {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    let _ = f.sync_all();
    let _ = posix_fadvise(f, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
}
