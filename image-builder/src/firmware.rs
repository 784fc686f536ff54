//! Raspberry Pi firmware: the pinned manifest (`firmware/manifest.toml`), the
//! local cache `labimg firmware fetch` fills, and verification of every file
//! against its pin before it goes into an image.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use lab_cli::files::{ensure_dir, Pending};
use lab_cli::progress::Progress;

pub const MANIFEST: &str = "firmware/manifest.toml";
pub const CONFIG_TEMPLATE: &str = "firmware/config.txt";
pub const BOARDS: [&str; 3] = ["rpi3", "rpi4", "rpi5"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the firmware manifest {path}: {source}")]
    ManifestRead { path: PathBuf, source: io::Error },
    #[error("the firmware manifest {path} is malformed: {source}")]
    ManifestParse { path: PathBuf, source: Box<toml::de::Error> },
    #[error(
        "the firmware manifest names archive `{archive}` for {file}, but declares no such archive"
    )]
    ManifestArchive { archive: String, file: String },
    #[error("unknown board `{board}`; known boards: {}", BOARDS.join(", "))]
    UnknownBoard { board: String },
    #[error("firmware directory {dir} is not readable: {source}")]
    DirUnreadable { dir: PathBuf, source: io::Error },
    #[error("firmware directory {dir} does not exist yet: run `labimg firmware fetch --board {board}` once (it downloads and checks the pinned files), or pass --firmware-dir DIR")]
    NoCache { dir: PathBuf, board: String },
    #[error("firmware file {name} is missing from {dir}; run `labimg firmware fetch` or pass --firmware-dir with the files")]
    Missing { name: String, dir: PathBuf },
    #[error("cannot read firmware file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "refusing firmware file {path}: its sha256 is {actual}, but firmware/manifest.toml pins {expected}. \
         The file is damaged or not the pinned version; delete it and run `labimg firmware fetch`"
    )]
    Mismatch { path: PathBuf, expected: String, actual: String },
    #[error("download of {url} failed: {reason}. Check the network, or fetch through a mirror with --mirror URL")]
    Download { url: String, reason: String },
    #[error(
        "refusing {url}: its sha256 is {actual}, the manifest pins {expected}; nothing was cached"
    )]
    ArchiveMismatch { url: String, expected: String, actual: String },
    #[error("{archive} does not contain {path} (or is not a .deb with a data.tar.xz)")]
    NotInArchive { archive: String, path: String },
    #[error("cannot unpack {archive}: {source}")]
    Unpack { archive: String, source: io::Error },
    #[error(transparent)]
    Output(#[from] lab_cli::files::Error),
    /// curl missing or not startable: not a network problem.
    #[error(transparent)]
    Tool(lab_cli::ToolError),
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub archive: Vec<Archive>,
    pub file: Vec<FirmwareFile>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Archive {
    pub id: String,
    pub version: String,
    pub upstream: String,
    pub url: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FirmwareFile {
    /// Name on the firmware partition.
    pub name: String,
    pub archive: String,
    /// Path inside the archive's data.
    pub path: String,
    pub sha256: String,
    pub size: u64,
    pub boards: Vec<String>,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, Error> {
        let text = fs::read_to_string(path)
            .map_err(|source| Error::ManifestRead { path: path.to_path_buf(), source })?;
        let m: Manifest = toml::from_str(&text).map_err(|source| Error::ManifestParse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        for f in &m.file {
            if !m.archive.iter().any(|a| a.id == f.archive) {
                return Err(Error::ManifestArchive {
                    archive: f.archive.clone(),
                    file: f.name.clone(),
                });
            }
        }
        Ok(m)
    }

    pub fn files_for(&self, board: &str) -> Result<Vec<&FirmwareFile>, Error> {
        if !BOARDS.contains(&board) {
            return Err(Error::UnknownBoard { board: board.to_string() });
        }
        Ok(self.file.iter().filter(|f| f.boards.iter().any(|b| b == board)).collect())
    }
}

/// The default cache: `$XDG_CACHE_HOME/labimg/firmware` or `~/.cache/...`.
pub fn default_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("labimg").join("firmware")
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A firmware file read and verified against its pin.
pub struct Verified {
    pub name: String,
    pub content: Vec<u8>,
    pub sha256: String,
}

/// Reads every file `board` needs from `dir` (flat, named as on the
/// partition) and checks each against its pin. Nothing unverified is returned.
pub fn load_verified(manifest: &Manifest, board: &str, dir: &Path) -> Result<Vec<Verified>, Error> {
    let files = manifest.files_for(board)?;
    fs::read_dir(dir).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => {
            Error::NoCache { dir: dir.to_path_buf(), board: board.to_string() }
        }
        _ => Error::DirUnreadable { dir: dir.to_path_buf(), source },
    })?;
    files
        .into_iter()
        .map(|f| {
            let path = dir.join(&f.name);
            let content = fs::read(&path).map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => {
                    Error::Missing { name: f.name.clone(), dir: dir.to_path_buf() }
                }
                _ => Error::Read { path: path.clone(), source },
            })?;
            let actual = sha256_hex(&content);
            if actual != f.sha256 {
                return Err(Error::Mismatch { path, expected: f.sha256.clone(), actual });
            }
            Ok(Verified { name: f.name.clone(), content, sha256: actual })
        })
        .collect()
}

/// What `firmware fetch` did.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchReport {
    pub cache: PathBuf,
    pub already_cached: Vec<String>,
    pub fetched: Vec<String>,
    pub downloaded_bytes: u64,
}

/// Makes sure the cache holds a verified copy of every file the `boards`
/// need, downloading only the archives of files that are missing or wrong.
/// `mirror` replaces the scheme and host of every archive URL.
pub fn fetch(
    manifest: &Manifest,
    boards: &[String],
    cache: &Path,
    mirror: Option<&str>,
    progress: Progress,
) -> Result<FetchReport, Error> {
    ensure_dir(cache)?;
    let mut report = FetchReport { cache: cache.to_path_buf(), ..Default::default() };
    let mut wanted: Vec<&FirmwareFile> = Vec::new();
    for b in boards {
        for f in manifest.files_for(b)? {
            if !wanted.iter().any(|w| w.name == f.name) {
                wanted.push(f);
            }
        }
    }
    let mut missing = Vec::new();
    for f in wanted {
        let ok = fs::read(cache.join(&f.name)).map(|c| sha256_hex(&c) == f.sha256).unwrap_or(false);
        if ok {
            report.already_cached.push(f.name.clone());
        } else {
            missing.push(f);
        }
    }
    let archives: BTreeSet<&str> = missing.iter().map(|f| f.archive.as_str()).collect();
    for id in archives {
        let archive = manifest.archive.iter().find(|a| a.id == id).expect("checked at load");
        let url = rebase(&archive.url, mirror);
        let data = download(&url, archive, progress)?;
        report.downloaded_bytes += data.len() as u64;
        let files: Vec<&FirmwareFile> =
            missing.iter().copied().filter(|f| f.archive == id).collect();
        for (f, content) in extract_deb(&data, &files, &url)? {
            let actual = sha256_hex(&content);
            if actual != f.sha256 {
                return Err(Error::Mismatch {
                    path: PathBuf::from(format!("{url}:{}", f.path)),
                    expected: f.sha256.clone(),
                    actual,
                });
            }
            let mut out = Pending::create(&cache.join(&f.name), 0o644)?;
            out.file
                .write_all(&content)
                .map_err(|source| Error::Read { path: out.path().to_path_buf(), source })?;
            out.commit()?;
            report.fetched.push(f.name.clone());
        }
    }
    Ok(report)
}

fn rebase(url: &str, mirror: Option<&str>) -> String {
    let Some(mirror) = mirror else {
        return url.to_string();
    };
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("/");
    format!("{}{}", mirror.trim_end_matches('/'), path)
}

/// The archive at `url`, read from curl's output as it arrives (hashed and
/// counted on the way), checked against its pin. curl rather than an HTTP
/// library: the system's CA store and proxy settings, and no TLS stack to
/// compile into labimg (docs/decisions/0010-firmware-fetch-with-curl.md).
fn download(url: &str, archive: &Archive, progress: Progress) -> Result<Vec<u8>, Error> {
    let fail = |reason: String| Error::Download { url: url.to_string(), reason };
    let mut curl = lab_cli::Cmd::new("curl")
        // --fail: an HTTP error is an exit status, not a page saved as the
        // archive; only http(s), also after a redirect.
        .args(["--fail", "--silent", "--show-error", "--location"])
        .args(["--proto", "=http,https", "--proto-redir", "=http,https"])
        // A mirror that stops sending (under 1 KiB/s for a minute) is an
        // error, not a wait without end.
        .args(["--connect-timeout", "30", "--speed-limit", "1024", "--speed-time", "60"])
        .arg("--user-agent")
        .arg(concat!("labimg/", env!("CARGO_PKG_VERSION")))
        .arg("--")
        .arg(url)
        .spawn_piped()
        .map_err(Error::Tool)?;
    drop(curl.stdin.take());
    // --silent --show-error: one line on failure, read after the exit.
    let stderr = curl.stderr.take().expect("piped");
    let stderr = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = io::BufReader::new(stderr).read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let mut out = curl.stdout.take().expect("piped");
    let bar = progress.bytes("fetch", archive.size);
    let mut data = Vec::with_capacity(archive.size as usize);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let read = loop {
        if let Err(e) = lab_cli::interrupt::check() {
            break Err(e.to_string());
        }
        match out.read(&mut buf) {
            Ok(0) => break Ok(()),
            // More than the pinned size cannot match the pin: stop there
            // rather than hold whatever the mirror sends.
            Ok(n) if data.len() as u64 + n as u64 > archive.size => {
                break Err(format!("it sends more than the pinned {} bytes", archive.size))
            }
            Ok(n) => {
                hasher.update(&buf[..n]);
                data.extend_from_slice(&buf[..n]);
                bar.inc(n as u64);
            }
            Err(e) => break Err(e.to_string()),
        }
    };
    bar.finish_and_clear();
    if read.is_err() {
        let _ = curl.kill();
    }
    let status = curl.wait().map_err(|e| fail(e.to_string()))?;
    let stderr = stderr.join().unwrap_or_default();
    read.map_err(&fail)?;
    // Ctrl-C reaches curl too: said as the interruption, not as its exit.
    lab_cli::interrupt::check().map_err(|e| fail(e.to_string()))?;
    if !status.success() {
        let said = stderr.trim().trim_start_matches("curl: ");
        return Err(fail(if said.is_empty() {
            format!("curl {}", lab_cli::tool::describe_status(status))
        } else {
            said.to_string()
        }));
    }
    let actual = hex::encode(hasher.finalize());
    if actual != archive.sha256 {
        return Err(Error::ArchiveMismatch {
            url: url.to_string(),
            expected: archive.sha256.clone(),
            actual,
        });
    }
    Ok(data)
}

/// Pulls `files` out of a Debian package: an `ar` archive whose
/// `data.tar.xz` member holds the package's files.
fn extract_deb<'f>(
    deb: &[u8],
    files: &[&'f FirmwareFile],
    url: &str,
) -> Result<Vec<(&'f FirmwareFile, Vec<u8>)>, Error> {
    let unpack = |source| Error::Unpack { archive: url.to_string(), source };
    let mut ar = ar::Archive::new(deb);
    while let Some(entry) = ar.next_entry() {
        let entry = entry.map_err(unpack)?;
        if entry.header().identifier() != b"data.tar.xz" {
            continue;
        }
        let mut tar = tar::Archive::new(xz2::read::XzDecoder::new(entry));
        let mut found = Vec::new();
        for item in tar.entries().map_err(unpack)? {
            let mut item = item.map_err(unpack)?;
            let path =
                item.path().map_err(unpack)?.to_string_lossy().trim_start_matches("./").to_string();
            if let Some(f) = files.iter().find(|f| f.path == path) {
                let mut content = Vec::new();
                item.read_to_end(&mut content).map_err(unpack)?;
                found.push((*f, content));
            }
        }
        if let Some(f) = files.iter().find(|f| !found.iter().any(|(g, _)| g.name == f.name)) {
            return Err(Error::NotInArchive { archive: url.to_string(), path: f.path.clone() });
        }
        return Ok(found);
    }
    Err(Error::NotInArchive { archive: url.to_string(), path: "data.tar.xz".into() })
}

/// `config.txt` from the template, naming the bootloader file.
pub fn render_config(template: &str, bootloader: &str) -> String {
    template.replace("@BOOTLOADER@", bootloader)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pinned manifest beside this crate, found through the
    /// CARGO_MANIFEST_DIR that cargo, nextest and the Nix check set when they
    /// run the test: the path compiled in (env!) is not where the source is
    /// when a test binary runs elsewhere (scripts/sandbox-check).
    fn repository_manifest() -> Manifest {
        let dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR is set by the test runner");
        Manifest::load(&Path::new(&dir).join("..").join(MANIFEST)).unwrap()
    }

    #[test]
    fn the_repository_manifest_covers_every_board() {
        let m = repository_manifest();
        for b in BOARDS {
            assert!(!m.files_for(b).unwrap().is_empty(), "{b}");
        }
        assert!(m.files_for("rpi2").is_err());
        for f in &m.file {
            assert_eq!(f.sha256.len(), 64, "{}", f.name);
        }
    }

    #[test]
    fn mirror_keeps_the_path() {
        assert_eq!(
            rebase("https://deb.debian.org/debian/pool/x.deb", Some("http://127.0.0.1:8080/")),
            "http://127.0.0.1:8080/debian/pool/x.deb"
        );
    }

    #[test]
    fn tampered_file_is_refused() {
        let m = repository_manifest();
        let dir = tempfile::tempdir().unwrap();
        for f in m.files_for("rpi5").unwrap() {
            fs::write(dir.path().join(&f.name), b"not the pinned file").unwrap();
        }
        let err = load_verified(&m, "rpi5", dir.path()).err().unwrap().to_string();
        assert!(err.contains("refusing firmware file"), "{err}");
    }
}
