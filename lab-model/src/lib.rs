//! The lab model both tools share: where the lab lives, its host facts, host
//! keys, and the SD image layout those facts describe.

pub mod blockdev;
pub mod disko;
pub mod facts;
pub mod ids;
pub mod keys;
pub mod layout;
pub mod secrets;

pub use facts::{Facts, Host, Lab};
