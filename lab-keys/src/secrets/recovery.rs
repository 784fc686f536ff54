//! The lab's recovery key: an age X25519 identity kept offline (paper, or
//! passphrase-encrypted on removable media), whose recipient is an
//! admin-level recipient of every secrets file and every lab-held host key.
//! With it alone an operator who lost every admin identity re-keys the lab
//! (docs/secrets.md, "Lost laptop").
//!
//! The tool prints the secret once and writes only the recipient,
//! `hosts/recovery-age.pub`; no secret ever reaches a disk through it.

use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;
use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};
use zeroize::Zeroizing;

use super::identity::x25519_recipients;
use super::{fsutil, Error, Result, RECOVERY_FILE};

/// A new recovery key: the secret (print once, then drop) and its recipient.
pub struct NewRecovery {
    pub identity: Zeroizing<String>,
    pub recipient: String,
    /// `hosts/recovery-age.pub`, written by [`record`].
    pub file: PathBuf,
    /// An earlier recovery key was replaced (`--replace`).
    pub replaced: bool,
}

pub fn recovery_path(root: &Path) -> PathBuf {
    root.join(RECOVERY_FILE)
}

/// `keys recovery new`: a fresh identity from the OS random source, nothing
/// written yet: the caller shows the secret, and only once that worked
/// [`record`]s its recipient, so a lab never names a recovery key nobody
/// saw. Refuses to replace an existing recovery key unless `replace`.
pub fn new_recovery(root: &Path, replace: bool) -> Result<NewRecovery> {
    let path = recovery_path(root);
    let existed = path.exists();
    if existed && !replace {
        return Err(Error::RecoveryExists { path: PathBuf::from(RECOVERY_FILE) });
    }
    let id = age::x25519::Identity::generate();
    let identity = Zeroizing::new(id.to_string().expose_secret().to_string());
    let recipient = id.to_public().to_string();
    Ok(NewRecovery { identity, recipient, file: path, replaced: existed })
}

/// Writes only the recipient of `made` (0644, atomic).
pub fn record(made: &NewRecovery) -> Result<()> {
    fsutil::atomic_write(&made.file, format!("{}\n", made.recipient).as_bytes(), 0o644)
}

/// The recipient in `hosts/recovery-age.pub`.
pub fn recorded(root: &Path) -> Result<String> {
    let path = recovery_path(root);
    let Some(bytes) = fsutil::read_optional(&path)? else {
        return Err(Error::NoRecovery { path: PathBuf::from(RECOVERY_FILE) });
    };
    let text = String::from_utf8_lossy(&bytes);
    crate::age::parse_recipient(&text).map(|r| r.to_string()).map_err(|e| Error::BadRecoveryFile {
        path: PathBuf::from(RECOVERY_FILE),
        reason: e.to_string(),
    })
}

/// `keys recovery check`: whether `text` (an identity file or the bare
/// `AGE-SECRET-KEY-1...` line, `what` names where it came from) is the lab's
/// recovery key. Returns its recipient.
pub fn check(root: &Path, text: &str, what: &str) -> Result<String> {
    let recorded = recorded(root)?;
    let found = x25519_recipients(text);
    if found.is_empty() {
        return Err(Error::NotAnIdentity { what: what.to_string() });
    }
    if found.contains(&recorded) {
        return Ok(recorded);
    }
    Err(Error::NotTheRecoveryKey {
        found: found.join(", "),
        recorded,
        path: RECOVERY_FILE.to_string(),
    })
}

/// `text` as a QR code of unicode half blocks (two modules per character,
/// four modules of quiet zone). By default dark modules are blanks, for the
/// usual light-on-dark terminal; `light_background` draws them as blocks.
pub fn qr(text: &str, light_background: bool) -> Zeroizing<String> {
    // An age identity is 74 characters of A-Z, 0-9 and `-`: QR alphanumeric
    // mode, version 4 at level M. Far below any capacity limit, so it cannot fail.
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .expect("an age identity fits a QR code");
    let (dark, light) = if light_background {
        (Dense1x2::Dark, Dense1x2::Light)
    } else {
        (Dense1x2::Light, Dense1x2::Dark)
    };
    Zeroizing::new(
        code.render::<Dense1x2>().dark_color(dark).light_color(light).quiet_zone(true).build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rendered characters back to modules: `true` = dark.
    fn modules(rendered: &str, light_background: bool) -> Vec<Vec<bool>> {
        let mut rows: Vec<Vec<bool>> = Vec::new();
        for line in rendered.lines() {
            let (mut top, mut bottom) = (Vec::new(), Vec::new());
            for c in line.chars() {
                let (t, b) = match c {
                    ' ' => (false, false),
                    '\u{2580}' => (true, false),
                    '\u{2584}' => (false, true),
                    '\u{2588}' => (true, true),
                    other => panic!("unexpected character {other:?}"),
                };
                // A filled half is a dark module only on a light background.
                top.push(t == light_background);
                bottom.push(b == light_background);
            }
            rows.push(top);
            rows.push(bottom);
        }
        let width = rows[0].len();
        rows.truncate(width);
        rows
    }

    fn decode(grid: &[Vec<bool>]) -> String {
        const SCALE: usize = 4;
        let size = grid.len();
        let mut img =
            rqrr::PreparedImage::prepare_from_bitmap(size * SCALE, size * SCALE, |x, y| {
                grid[y / SCALE][x / SCALE]
            });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code in the rendering");
        grids[0].decode().expect("the QR code decodes").1
    }

    #[test]
    fn the_qr_code_decodes_to_the_secret() {
        for light_background in [false, true] {
            let id = age::x25519::Identity::generate();
            let secret = id.to_string().expose_secret().to_string();
            let rendered = qr(&secret, light_background);
            let grid = modules(&rendered, light_background);
            assert_eq!(grid.len(), grid[0].len(), "square");
            // The quiet zone is light all round.
            assert!(grid[0].iter().all(|d| !d) && grid.iter().all(|r| !r[0]));
            assert_eq!(decode(&grid), secret);
        }
    }

    #[test]
    fn new_writes_only_the_recipient_and_check_tells_keys_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let made = new_recovery(root, false).unwrap();
        assert!(!root.join(RECOVERY_FILE).exists(), "recorded before it was shown");
        record(&made).unwrap();
        let on_disk = std::fs::read_to_string(root.join(RECOVERY_FILE)).unwrap();
        assert_eq!(on_disk, format!("{}\n", made.recipient));
        assert!(!on_disk.contains("AGE-SECRET-KEY"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join(RECOVERY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert!(!made.replaced);

        let file =
            format!("# created: now\n# public key: {}\n{}\n", made.recipient, *made.identity);
        assert_eq!(check(root, &file, "stdin").unwrap(), made.recipient);
        assert_eq!(check(root, &made.identity, "stdin").unwrap(), made.recipient);

        let err = new_recovery(root, false).err().unwrap().to_string();
        assert!(err.contains("already exists") && err.contains("--replace"), "{err}");
        let other = age::x25519::Identity::generate();
        let err = check(root, other.to_string().expose_secret(), "stdin").unwrap_err().to_string();
        assert!(
            err.contains("this is not the lab's recovery key")
                && err.contains(&other.to_public().to_string())
                && err.contains(&made.recipient),
            "{err}"
        );
        // A typo from paper: the checksum fails, and we say so.
        let mut typo = made.identity.to_string();
        typo.replace_range(30..31, if &typo[30..31] == "Q" { "P" } else { "Q" });
        let err = check(root, &typo, "stdin").unwrap_err().to_string();
        assert!(err.contains("not an age identity") && err.contains("typo"), "{err}");

        let again = new_recovery(root, true).unwrap();
        assert!(again.replaced && again.recipient != made.recipient);
    }
}
