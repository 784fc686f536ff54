//! labprov's library: everything the `labprov` binary does lives here.

pub mod cli_install;
pub mod cli_keys;
pub mod disk;
pub mod enrol;
pub mod install;
pub mod keys;
pub mod secrets;
pub mod ssh;
