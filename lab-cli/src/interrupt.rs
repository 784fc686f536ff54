//! Ctrl-C: the handler only sets a flag. Long work polls [`check`] between
//! steps (and the tool runner while a program runs), stops, cleans up what
//! it started and says how to resume; the exit code is 130.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[derive(Debug, thiserror::Error)]
#[error("interrupted (Ctrl-C)")]
pub struct Interrupted;

/// Installs the handler once; later calls are no-ops.
pub fn install() {
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
}

pub fn requested() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn check() -> Result<(), Interrupted> {
    if requested() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}
