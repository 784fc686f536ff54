//! labprov's library: everything the `labprov` binary does lives here.

pub mod cli_keys;
pub mod disk;
pub mod enrol;
pub mod keys;
pub mod secrets;
