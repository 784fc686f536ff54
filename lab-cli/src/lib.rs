//! The command-line layer both tools share, so that `labimg` and `labprov`
//! behave as one toolkit: the same exit codes and one error line
//! ([`exit`]), one way to run an external program ([`tool`]), one prompt
//! ([`prompt`]), one `--json` path ([`output`]), progress ([`progress`]),
//! Ctrl-C ([`interrupt`]) and files that appear only when complete
//! ([`files`]). Clap only behind the `clap` feature ([`args`]: the
//! arguments both binaries share); the libraries never parse a command line.

#[cfg(feature = "clap")]
pub mod args;
pub mod exit;
pub mod files;
pub mod interrupt;
pub mod output;
pub mod progress;
pub mod prompt;
pub mod tool;

pub use exit::{Class, Classify};
pub use tool::{Cmd, ToolError};
