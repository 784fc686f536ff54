//! Where `sgdisk --align-end [--set-alignment=N] --new=i:START:END` puts a
//! partition, computed in-process (GPT fdisk 1.0.9 semantics), so labprov
//! writes the same table as disko's sgdisk calls without running sgdisk.
//!
//! Every sgdisk call is a new process that re-reads the table, so the
//! alignment is recomputed from the partitions already there each time
//! (`GPTData::ComputeAlignment`). The golden test
//! (`provisioner/tests/disko_partition_golden.rs`: every fixture's table as
//! disko's own sgdisk calls wrote it) and `provisioner/tests/host_specs.rs`
//! (the host specs, partitioned by the real sgdisk beside labprov) check
//! this model against sgdisk.

use super::typecodes::TYPE_CODES;

/// sgdisk's default alignment in bytes-independent sectors of 512 bytes.
const DEFAULT_ALIGNMENT_512: u64 = 2048;
const MIN_AF_ALIGNMENT: u64 = 8;
/// 128 entries of 128 bytes: the table sgdisk --clear creates.
pub const ENTRIES_BYTES: u64 = 128 * 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    #[error("partition {number}: `{value}` is not a position sgdisk understands (a number with an optional K/M/G/T/P/E or s suffix, optionally after + or -)")]
    BadPosition { number: u32, value: String },
    #[error("partition {number} ({start}..{end}) does not fit: sgdisk would refuse it (overlaps another partition, ends before it starts, or runs past the last usable sector {last_usable}); shrink the earlier partitions or use a bigger disk")]
    DoesNotFit { number: u32, start: u64, end: u64, last_usable: u64 },
    #[error("partition number {number} is already in use on this table")]
    NumberInUse { number: u32 },
    #[error("the disk has no free space left for partition {number}")]
    NoSpace { number: u32 },
}

/// The usable area of a GPT disk as sgdisk lays it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub sector_size: u64,
    pub total_sectors: u64,
    pub first_usable: u64,
    pub last_usable: u64,
}

impl Layout {
    pub fn new(sector_size: u64, total_sectors: u64) -> Layout {
        let entry_sectors = ENTRIES_BYTES.div_ceil(sector_size);
        Layout {
            sector_size,
            total_sectors,
            first_usable: 2 + entry_sectors,
            last_usable: total_sectors.saturating_sub(2 + entry_sectors),
        }
    }
}

/// A used slot: its 1-based number and inclusive sector range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub number: u32,
    pub first: u64,
    pub last: u64,
}

/// The table sgdisk sees when a `--new` runs.
#[derive(Debug, Clone)]
pub struct Table {
    pub layout: Layout,
    pub slots: Vec<Slot>,
}

impl Table {
    pub fn new(layout: Layout) -> Table {
        Table { layout, slots: Vec::new() }
    }

    /// `GPTData::ComputeAlignment`: the largest power of two up to the
    /// default that divides every partition's first sector, at least 8.
    pub fn computed_alignment(&self) -> u64 {
        let mut align = DEFAULT_ALIGNMENT_512 * 512 / self.layout.sector_size;
        let mut exponent = align.trailing_zeros();
        for s in &self.slots {
            loop {
                align = 1 << exponent;
                if s.first % align == 0 || exponent == 0 {
                    break;
                }
                exponent -= 1;
            }
        }
        if align < MIN_AF_ALIGNMENT && self.layout.sector_size == 512 {
            align = MIN_AF_ALIGNMENT;
        }
        align
    }

    fn is_free(&self, sector: u64) -> bool {
        sector >= self.layout.first_usable
            && sector <= self.layout.last_usable
            && !self.slots.iter().any(|s| sector >= s.first && sector <= s.last)
    }

    /// `FindFirstAvailable(start)`
    fn first_available(&self, start: u64) -> u64 {
        let mut first = start.max(self.layout.first_usable);
        loop {
            match self.slots.iter().find(|s| first >= s.first && first <= s.last) {
                Some(s) => first = s.last + 1,
                None => return first,
            }
        }
    }

    /// `FindLastInFree(start)`: the end of the free run that holds `start`.
    fn last_in_free(&self, start: u64) -> u64 {
        let mut nearest = self.layout.last_usable;
        for s in &self.slots {
            if nearest > s.first && s.first > start {
                nearest = s.first - 1;
            }
        }
        nearest
    }

    /// `FindFirstInLargest`: the first sector of the largest free run (the
    /// earliest one on ties), 0 when the disk is full.
    fn first_in_largest(&self) -> u64 {
        let mut best = (0u64, 0u64);
        let mut start = 0;
        loop {
            let first = self.first_available(start);
            if first > self.layout.last_usable {
                break;
            }
            let last = self.last_in_free(first);
            let size = last - first + 1;
            if size > best.1 {
                best = (first, size);
            }
            start = last + 1;
        }
        best.0
    }

    /// `GPTData::Align`: move `sector` to an alignment boundary, earlier if
    /// the sectors in between are free, else later.
    fn align(&self, sector: u64, alignment: u64) -> u64 {
        if sector.is_multiple_of(alignment) {
            return sector;
        }
        let earlier = sector / alignment * alignment;
        let later = earlier + alignment;
        if earlier >= self.layout.first_usable && (earlier..sector).all(|s| self.is_free(s)) {
            return earlier;
        }
        if later <= self.layout.last_usable && (sector + 1..=later).all(|s| self.is_free(s)) {
            return later;
        }
        sector
    }

    /// Adds partition `number` the way
    /// `sgdisk --align-end [--set-alignment=A] --new=number:start:end` does.
    /// `set_alignment` is disko's `alignment` option (0 = sgdisk's own).
    pub fn new_partition(
        &mut self,
        number: u32,
        start: &str,
        end: &str,
        set_alignment: u64,
    ) -> Result<Slot, GeometryError> {
        if self.slots.iter().any(|s| s.number == number) {
            return Err(GeometryError::NumberInUse { number });
        }
        let alignment = if set_alignment > 0 { set_alignment } else { self.computed_alignment() };
        let mut low = self.first_in_largest();
        if low == 0 {
            return Err(GeometryError::NoSpace { number });
        }
        low = self.align(low, alignment);
        let mut high = self.last_in_free(low);
        // --align-end: the default end is the last sector before an
        // alignment boundary.
        let aligned_high = (high + 1) / alignment * alignment;
        if aligned_high > low {
            high = aligned_high - 1;
        }
        let ss = self.layout.sector_size;
        let bad = |v: &str| GeometryError::BadPosition { number, value: v.to_string() };
        let start_sector = ieee_to_int(start, ss, low, high, low).ok_or_else(|| bad(start))?;
        let end_sector = ieee_to_int(end, ss, start_sector, high, high).ok_or_else(|| bad(end))?;
        // CreatePartition: align the start (the end stays where it was).
        let first = self.align(start_sector, alignment);
        let fits =
            self.is_free(first) && first <= end_sector && self.last_in_free(first) >= end_sector;
        if !fits {
            return Err(GeometryError::DoesNotFit {
                number,
                start: first,
                end: end_sector,
                last_usable: self.layout.last_usable,
            });
        }
        let slot = Slot { number, first, last: end_sector };
        self.slots.push(slot);
        Ok(slot)
    }
}

/// sgdisk's `IeeeToInt`: `[+|-]N[KMGTPE|s]` in sectors; 0 or empty means
/// `def`; `+` counts from `low` (end) or `def` (start); `-` from `high`.
/// None where sgdisk's parse flags bad input (it then uses sector 0, which
/// never fits).
pub fn ieee_to_int(value: &str, sector_size: u64, low: u64, high: u64, def: u64) -> Option<u64> {
    let v = value.trim_start_matches(' ');
    let (sign, rest) = match v.as_bytes().first() {
        Some(b'+') => ('+', &v[1..]),
        Some(b'-') => ('-', &v[1..]),
        _ => (' ', v),
    };
    if !rest.is_empty() && !rest.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let digits_end = rest.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(rest.len());
    let mut response: u64 = if digits_end == 0 { 0 } else { rest[..digits_end].parse().ok()? };
    // istream >> char skips whitespace and reads one character.
    let suffix = rest[digits_end..]
        .trim_start()
        .chars()
        .next()
        .map(|c| c.to_ascii_uppercase())
        .unwrap_or(' ');
    let mut sign = sign;
    let mut suffix = suffix;
    if rest.is_empty() || response == 0 {
        response = def;
        suffix = ' ';
        sign = ' ';
    }
    if let Some(pos) = "KMGTPE".find(suffix) {
        let bytes_per_unit: u64 = 1 << (10 * (pos as u32 + 1));
        if bytes_per_unit >= sector_size {
            let mult = bytes_per_unit / sector_size;
            response = response.checked_mul(mult)?;
        } else {
            response /= sector_size / bytes_per_unit;
        }
    }
    match sign {
        '+' => {
            if def == high {
                response = response.saturating_sub(1);
                response.checked_add(low)
            } else {
                response.checked_add(def)
            }
        }
        '-' => high.checked_sub(response),
        _ => Some(response),
    }
}

/// The type GUID sgdisk writes for a disko `type`: a GUID as given, or the
/// GUID of a short code. sgdisk silently writes "Linux filesystem" for a
/// code it does not know; the second value says when that happened.
pub fn type_guid(code: &str) -> (String, bool) {
    if code.len() == 36 {
        return (code.to_ascii_uppercase(), true);
    }
    let lower = code.to_ascii_lowercase();
    match TYPE_CODES.binary_search_by(|(c, _)| (*c).cmp(lower.as_str())) {
        Ok(i) => (TYPE_CODES[i].1.to_string(), true),
        Err(_) => ("0FC63DAF-8483-4772-8E79-3D69D8477DE4".to_string(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk4g() -> Table {
        Table::new(Layout::new(512, 8 * 1024 * 1024))
    }

    #[test]
    fn layout_of_a_4gib_disk() {
        let l = Layout::new(512, 8388608);
        assert_eq!((l.first_usable, l.last_usable), (34, 8388574));
    }

    #[test]
    fn simple_efi() {
        let mut t = disk4g();
        assert_eq!(
            t.new_partition(1, "0", "+500M", 0).unwrap(),
            Slot { number: 1, first: 2048, last: 1026047 }
        );
        assert_eq!(
            t.new_partition(2, "0", "-0", 0).unwrap(),
            Slot { number: 2, first: 1026048, last: 8386559 }
        );
    }

    #[test]
    fn end_from_the_disk_end() {
        let mut t = disk4g();
        t.new_partition(1, "0", "+500M", 0).unwrap();
        t.new_partition(2, "0", "+10M", 0).unwrap();
        assert_eq!(t.new_partition(3, "0", "-1G", 0).unwrap().last, 6289407);
        assert_eq!(
            t.new_partition(4, "0", "-0", 0).unwrap(),
            Slot { number: 4, first: 6289408, last: 8386559 }
        );
    }

    #[test]
    fn explicit_start_and_end() {
        let mut t = disk4g();
        assert_eq!(
            t.new_partition(1, "1M", "128M", 0).unwrap(),
            Slot { number: 1, first: 2048, last: 262144 }
        );
    }

    #[test]
    fn too_big_is_an_error() {
        let mut t = disk4g();
        assert!(matches!(t.new_partition(1, "0", "+5G", 0), Err(GeometryError::DoesNotFit { .. })));
    }

    #[test]
    fn type_codes() {
        assert_eq!(type_guid("EF00").0, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(type_guid("ef02").0, "21686148-6449-6E6F-744E-656564454649");
        assert_eq!(type_guid("1234"), ("0FC63DAF-8483-4772-8E79-3D69D8477DE4".to_string(), false));
    }
}
