//! labprov's library: everything the `labprov` binary does lives here.

pub mod blockdev;
pub mod disk;
