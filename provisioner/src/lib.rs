//! labprov's library: disks from disko specs ([`disk`]), pinned SSH
//! ([`ssh`]), enrolment ([`enrol`]), installs ([`install`]), deploys and
//! the fleet's status ([`deploy`]), backups by hand ([`backup`]) and reading
//! key files ([`keys`]). The `labprov` binary only parses its command line
//! and renders results.

pub mod backup;
pub mod deploy;
pub mod disk;
pub mod enrol;
pub mod install;
pub mod keypush;
pub mod keys;
pub mod ssh;
