//! `labimg firmware fetch` against a real HTTP server on loopback that serves
//! the pinned Debian packages the way a Debian mirror lays them out.

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// python3's http.server on a free loopback port, serving `root`.
fn serve(root: &Path) -> (Server, String) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "http.server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, format!("http://127.0.0.1:{port}"))
}

/// Changes an archive's bytes on the mirror (see `mirror`).
type Tamper = fn(&mut Vec<u8>);

#[allow(clippy::ptr_arg)] // a Tamper: others grow the archive
fn flip_a_byte(bytes: &mut Vec<u8>) {
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
}

/// A mirror tree with each pinned archive at its URL's path; `tamper`
/// changes the named archive's bytes.
fn mirror(debs: &Path, into: &Path, tamper: Option<(&str, Tamper)>) {
    let manifest: toml::Value =
        toml::from_str(&fs::read_to_string(repo().join("firmware/manifest.toml")).unwrap())
            .unwrap();
    for a in manifest["archive"].as_array().unwrap() {
        let url = a["url"].as_str().unwrap();
        let path = url.split_once("://").unwrap().1.split_once('/').unwrap().1;
        let name = url.rsplit('/').next().unwrap();
        let dest = into.join(path);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        if let Some((_, change)) = tamper.filter(|(id, _)| *id == a["id"].as_str().unwrap()) {
            let mut bytes = fs::read(debs.join(name)).unwrap();
            change(&mut bytes);
            fs::write(&dest, bytes).unwrap();
        } else {
            std::os::unix::fs::symlink(debs.join(name), &dest).unwrap();
        }
    }
}

fn debs(test: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("LABIMG_FIRMWARE_DEBS")
        .map(Into::into)
        .unwrap_or_else(|| repo().join("target/firmware-debs"));
    let manifest = fs::read_to_string(repo().join("firmware/manifest.toml")).unwrap();
    let missing = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("url = \""))
        .map(|u| u.trim_end_matches('"').rsplit('/').next().unwrap().to_string())
        .find(|n| !dir.join(n).is_file());
    match missing {
        Some(n) => {
            skip(test, &format!("{n} not in {} (tests/firmware/prepare.sh downloads it; set LABIMG_FIRMWARE_DEBS)", dir.display()));
            None
        }
        None => Some(dir),
    }
}

#[test]
fn fetch_verifies_caches_and_is_idempotent() {
    let t = "fetch_verifies_caches_and_is_idempotent";
    let Some(debs) = debs(t) else { return };
    let tmp = tempfile::tempdir().unwrap();
    mirror(&debs, &tmp.path().join("www"), None);
    let (_server, url) = serve(&tmp.path().join("www"));
    let cache = tmp.path().join("cache");
    let out =
        ok(labimg().args(["firmware", "fetch", "--json", "--mirror", &url, "--cache"]).arg(&cache));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["fetched"].as_array().unwrap().len(), 11, "{report}");
    for board in ["rpi3", "rpi4", "rpi5"] {
        ok(labimg().args(["firmware", "verify", "--board", board, "--firmware-dir"]).arg(&cache));
    }
    // A second run finds everything in place and downloads nothing.
    let out =
        ok(labimg().args(["firmware", "fetch", "--json", "--mirror", &url, "--cache"]).arg(&cache));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["downloadedBytes"].as_u64(), Some(0), "{report}");
    // A damaged cached file is fetched again.
    fs::write(cache.join("start4.elf"), b"damaged").unwrap();
    let out = ok(labimg()
        .args(["firmware", "fetch", "--json", "--board", "rpi4", "--mirror", &url, "--cache"])
        .arg(&cache));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["fetched"].as_array().unwrap().iter().any(|f| f == "start4.elf"), "{report}");
    ok(labimg().args(["firmware", "verify", "--board", "rpi4", "--firmware-dir"]).arg(&cache));
}

#[test]
fn a_tampered_download_is_refused_and_never_cached() {
    let t = "a_tampered_download_is_refused_and_never_cached";
    let Some(debs) = debs(t) else { return };
    let tmp = tempfile::tempdir().unwrap();
    mirror(&debs, &tmp.path().join("www"), Some(("raspi-firmware", flip_a_byte)));
    let (err, cache, _) = failing_rpi4_fetch(&tmp.path().join("www"));
    assert!(err.contains("refusing") && err.contains("raspi-firmware"), "{err}");
    assert_nothing_cached(&cache);
}

/// `labimg firmware fetch --board rpi4` from a mirror serving `www`, into a
/// cache beside it, which must fail: its stderr, the cache and the URL.
fn failing_rpi4_fetch(www: &Path) -> (String, std::path::PathBuf, String) {
    let (_server, url) = serve(www);
    let cache = www.with_file_name("cache");
    let res = run(labimg()
        .args(["firmware", "fetch", "--board", "rpi4", "--mirror", &url, "--cache"])
        .arg(&cache));
    assert!(!res.status.success());
    (stderr(&res), cache, url)
}

/// No rpi4 firmware file and no partial download in the cache.
fn assert_nothing_cached(cache: &Path) {
    assert!(!cache.join("start4.elf").exists() && !cache.join("fixup4.dat").exists());
    assert!(listing(cache).iter().all(|n| !n.ends_with(".partial")), "{:?}", listing(cache));
}

#[test]
fn an_unreachable_mirror_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let res = run(labimg()
        .args([
            "firmware",
            "fetch",
            "--board",
            "rpi5",
            "--mirror",
            &format!("http://127.0.0.1:{port}"),
            "--cache",
        ])
        .arg(tmp.path()));
    assert!(!res.status.success());
    let err = stderr(&res);
    assert!(err.contains("download of http://127.0.0.1") && err.contains("--mirror"), "{err}");
}

#[test]
fn a_mirror_without_the_archive_is_a_clear_error_and_caches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("www")).unwrap();
    let (err, cache, url) = failing_rpi4_fetch(&tmp.path().join("www"));
    // curl's --fail: the HTTP status, not a 404 page taken for the archive.
    assert!(
        err.contains(&format!("download of {url}/debian/")) && err.contains("returned error: 404"),
        "{err}"
    );
    assert!(listing(&cache).is_empty(), "{:?}", listing(&cache));
}

#[test]
fn a_mirror_sending_more_than_the_pinned_size_is_cut_off_and_nothing_cached() {
    let t = "a_mirror_sending_more_than_the_pinned_size_is_cut_off_and_nothing_cached";
    let Some(debs) = debs(t) else { return };
    let tmp = tempfile::tempdir().unwrap();
    mirror(&debs, &tmp.path().join("www"), Some(("raspi-firmware", |b| b.extend([0u8; 4096]))));
    let (err, cache, _) = failing_rpi4_fetch(&tmp.path().join("www"));
    assert!(err.contains("raspi-firmware") && err.contains("more than the pinned"), "{err}");
    assert_nothing_cached(&cache);
}
