//! Identifiers derived from a host name, so that the same host always gets the
//! same disk id, filesystem UUID and volume id (reproducible images), while
//! two hosts never share them.

use sha2::{Digest, Sha256};

fn digest(host: &str, purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"homelab-id\0");
    h.update(purpose.as_bytes());
    h.update(b"\0");
    h.update(host.as_bytes());
    h.finalize().into()
}

/// A 32-bit id (MBR disk signature, FAT volume id).
pub fn id32(host: &str, purpose: &str) -> u32 {
    let d = digest(host, purpose);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// A name-based UUID (RFC 9562 version 8, variant 10), as its 16 bytes.
pub fn uuid(host: &str, purpose: &str) -> [u8; 16] {
    let d = digest(host, purpose);
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    u[6] = (u[6] & 0x0f) | 0x80;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

pub fn uuid_string(bytes: &[u8; 16]) -> String {
    let h = hex::encode(bytes);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_distinct() {
        assert_eq!(id32("nixpi", "disk"), id32("nixpi", "disk"));
        assert_ne!(id32("nixpi", "disk"), id32("luna", "disk"));
        assert_ne!(uuid("nixpi", "root"), uuid("nixpi", "hash-seed"));
        let s = uuid_string(&uuid("nixpi", "root"));
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "8", "version 8: {s}");
    }
}
