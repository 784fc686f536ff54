//! Where `parted -s DEV -- mkpart NAME START END` puts a partition (GNU parted
//! 3.5 semantics, optimal alignment), for disko's legacy `table` type.
//!
//! parted reads SI units (`M` = MB = 10^6 bytes) as "about here": the start
//! and end may move by up to half a unit to reach a 1 MiB boundary (starts on
//! a boundary, ends one sector before one). IEC units (`MiB`) and sectors are
//! exact, and an IEC end means "up to, not including".

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartedError {
    #[error("`{0}` is not a position parted understands (a number with a unit like 1MiB, 500M, 2048s or 100%)")]
    BadPosition(String),
    #[error("partition {index} ({start}..{end}) does not fit on the disk or overlaps another partition; check start/end")]
    DoesNotFit { index: usize, start: u64, end: u64 },
    #[error("partition {index}: {message}")]
    Msdos { index: usize, message: String },
}

/// A character of a legacy `table` partition name that disko cannot
/// escape, so disko's evaluation of the spec fails on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{character:?} at byte {offset} is not printable ASCII (0x20..=0x7E)")]
pub struct UnescapableChar {
    pub character: char,
    pub offset: usize,
}

/// The name disko passes to `parted mkpart` for a partition of a legacy
/// `table` of format gpt, which parted writes to the GPT entry as it is.
///
/// disko v1.13.0 (`de570873`) `lib/types/table.nix` runs
/// `mkpart "${diskoLib.hexEscapeUdevSymlink partition.name}" ...`: the
/// escape of `lib/default.nix` ([`hex_escape_udev_symlink`]), so
/// `my name` is the literal `my\x20name`, backslash included, on disk.
/// That escape takes each character's code from nixpkgs
/// `lib.strings.charToInt`, a lookup in `lib/ascii-table.nix` that holds
/// only 0x20..=0x7E, so a tab, a newline or any non-ASCII byte makes
/// disko's evaluation fail; it is an error here too, so labprov never
/// writes a name disko could not.
///
/// [`hex_escape_udev_symlink`]: crate::normalize::hex_escape_udev_symlink
pub fn mkpart_name(name: &str) -> Result<String, UnescapableChar> {
    if let Some((offset, character)) = name.char_indices().find(|(_, c)| !(' '..='~').contains(c)) {
        return Err(UnescapableChar { character, offset });
    }
    Ok(crate::normalize::hex_escape_udev_symlink(name))
}

/// The 1 MiB grain parted aligns to when the device reports no topology.
const GRAIN_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy)]
struct Parsed {
    sector: i128,
    radius: i128,
    iec: bool,
}

fn parse(value: &str, total: u64, sector_size: u64) -> Result<Parsed, PartedError> {
    let bad = || PartedError::BadPosition(value.to_string());
    let v = value.trim();
    let negative = v.starts_with('-');
    let num_end = v
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '-' || c == '+'))))
        .map(|(i, _)| i)
        .unwrap_or(v.len());
    let num: f64 = v[..num_end].parse().map_err(|_| bad())?;
    let suffix = v[num_end..].trim();
    // parse_unit_suffix: one letter is a shorthand, else a unit name; no
    // unit means the default unit, MB.
    let (unit_bytes, iec, percent): (f64, bool, bool) = match suffix.to_ascii_lowercase().as_str() {
        "" | "m" | "mb" => (1e6, false, false),
        "s" => (sector_size as f64, false, false),
        "b" => (1.0, false, false),
        "k" | "kb" => (1e3, false, false),
        "g" | "gb" => (1e9, false, false),
        "t" | "tb" => (1e12, false, false),
        "kib" => (1024.0, true, false),
        "mib" => (1048576.0, true, false),
        "gib" => (1073741824.0, true, false),
        "tib" => (1099511627776.0, true, false),
        "%" => (total as f64 * sector_size as f64 / 100.0, false, true),
        _ => return Err(bad()),
    };
    let _ = percent;
    let unit_sectors = (unit_bytes / sector_size as f64).ceil() as i128;
    let mut radius = (unit_sectors / 2 - 1).max(0);
    if iec || suffix.eq_ignore_ascii_case("s") {
        radius = 0;
    }
    let mut sector = (num * unit_bytes / sector_size as f64) as i128;
    if negative {
        sector += total as i128;
    }
    Ok(Parsed { sector, radius, iec })
}

/// Nearest value in `[lo, hi]` congruent to `offset` modulo `grain`; ties
/// go down (libparted `ped_alignment_align_nearest`).
fn nearest_aligned(target: i128, lo: i128, hi: i128, grain: i128, offset: i128) -> Option<i128> {
    if lo > hi {
        return None;
    }
    let t = target.clamp(lo, hi);
    let down = t - (t - offset).rem_euclid(grain);
    let up = if (t - offset).rem_euclid(grain) == 0 { t } else { down + grain };
    let down = (down >= lo).then_some(down);
    let up = (up <= hi).then_some(up);
    match (down, up) {
        (Some(d), Some(u)) => Some(if u - target < target - d { u } else { d }),
        (d, u) => d.or(u),
    }
}

/// The sectors parted chooses for `mkpart ... start end` on a disk whose
/// partitions may use `[first_usable, last_usable]`, given the ranges taken.
// The arguments are the disk geometry parted itself reads; a struct for one
// caller would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn place(
    index: usize,
    start: &str,
    end: &str,
    total: u64,
    sector_size: u64,
    first_usable: u64,
    last_usable: u64,
    taken: &[(u64, u64)],
) -> Result<(u64, u64), PartedError> {
    let s = parse(start, total, sector_size)?;
    let mut e = parse(end, total, sector_size)?;
    let last_dev = total as i128 - 1;
    let clip = |x: i128| x.clamp(0, last_dev);
    let s_sector = clip(s.sector);
    if e.iec {
        // _adjust_end_if_iec: "up to 100MiB" ends one sector before it.
        e.sector -= 1;
    }
    let e_sector = clip(e.sector);
    let grain = (GRAIN_BYTES / sector_size) as i128;
    let (lo, hi) = (first_usable as i128, last_usable as i128);
    let s_lo = (s_sector - s.radius).max(lo);
    let s_hi = (s_sector + s.radius).min(hi);
    let e_lo = (e_sector - e.radius).max(lo);
    let e_hi = (e_sector + e.radius).min(hi);
    let first = nearest_aligned(s_sector, s_lo, s_hi, grain, 0)
        .or_else(|| (s_lo <= s_hi).then(|| s_sector.clamp(s_lo, s_hi)));
    let first = first.ok_or(PartedError::DoesNotFit {
        index,
        start: s_sector.max(0) as u64,
        end: e_sector.max(0) as u64,
    })?;
    let e_lo = e_lo.max(first);
    let last = nearest_aligned(e_sector, e_lo, e_hi, grain, grain - 1)
        .or_else(|| (e_lo <= e_hi).then(|| e_sector.clamp(e_lo, e_hi)));
    let last = last.ok_or(PartedError::DoesNotFit {
        index,
        start: first as u64,
        end: e_sector.max(0) as u64,
    })?;
    let (first, last) = (first as u64, last as u64);
    if taken.iter().any(|&(a, b)| first <= b && a <= last) {
        return Err(PartedError::DoesNotFit { index, start: first, end: last });
    }
    Ok((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOTAL: u64 = 8388608;

    #[test]
    fn legacy_gpt_fixture() {
        let a = place(1, "1M", "500M", TOTAL, 512, 34, 8388574, &[]).unwrap();
        assert_eq!(a, (2048, 976895));
        let b = place(2, "500M", "100%", TOTAL, 512, 34, 8388574, &[a]).unwrap();
        assert_eq!(b, (976896, 8386559));
    }

    #[test]
    fn msdos_fixture() {
        assert_eq!(place(1, "1M", "100%", TOTAL, 512, 1, TOTAL - 1, &[]).unwrap(), (2048, 8388607));
    }

    #[test]
    fn names_are_escaped_as_disko_escapes_them() {
        let esc = |s: &str| mkpart_name(s).unwrap();
        assert_eq!(esc("name with spaces"), r"name\x20with\x20spaces");
        assert_eq!(esc(r#"say "hi""#), r"say\x20\x22hi\x22");
        assert_eq!(esc("it's"), r"it\x27s");
        assert_eq!(esc(r"a\b"), r"a\x5Cb");
        assert_eq!(esc("100%"), r"100\x25");
        // The regex range `+-.` keeps `+ , - .`; the other kept punctuation.
        assert_eq!(esc("x,y+z-w.v"), "x,y+z-w.v");
        assert_eq!(esc("#:=@_/"), "#:=@_/");
        assert_eq!(esc("ESP"), "ESP");
        assert_eq!(esc("~*"), r"\x7E\x2A");
        assert_eq!(esc(""), "");
    }

    #[test]
    fn names_disko_cannot_evaluate_are_refused() {
        for (name, character, offset) in [
            ("a\tb", '\t', 1),
            ("line\n", '\n', 4),
            ("caf\u{e9}", '\u{e9}', 3),
            ("\u{7f}", '\u{7f}', 0),
        ] {
            assert_eq!(mkpart_name(name), Err(UnescapableChar { character, offset }), "{name:?}");
        }
    }

    #[test]
    fn iec_units_are_exact() {
        assert_eq!(
            place(1, "1MiB", "100MiB", TOTAL, 512, 34, 8388574, &[]).unwrap(),
            (2048, 204799)
        );
    }
}
