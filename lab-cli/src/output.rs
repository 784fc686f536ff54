//! What the tools print on stdout: JSON for `--json`, text otherwise, and
//! whether they are quiet on stderr (progress and streamed tool output are
//! off under `--json`, so a script reads clean JSON and errors only).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use serde::Serialize;

static QUIET: AtomicBool = AtomicBool::new(false);

/// Set once by the binary from `--json`.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::SeqCst);
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::SeqCst)
}

/// A line of narration on stderr ("disk: applying on ..."), unless quiet.
pub fn say(line: &str) {
    if !quiet() {
        eprintln!("{line}");
    }
}

/// The one `--json` path: pretty JSON and a newline on stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("render the JSON report")?;
    text.push('\n');
    stdout(text.as_bytes())
}

/// `value` as JSON when `json`, else the text `render` makes.
pub fn report<T: Serialize + ?Sized>(
    json_wanted: bool,
    value: &T,
    render: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json_wanted {
        json(value)
    } else {
        stdout(render(value).as_bytes())
    }
}

/// Writes all of `bytes` to stdout: a closed pipe (`| head`) ends quietly,
/// a failed write (a full disk under `> file`) is an error.
pub fn stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("write to stdout"),
        _ => Ok(()),
    }
}
