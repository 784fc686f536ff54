//! Ctrl-C handling: long phases poll [`check`] so an interrupted build stops
//! between steps, removes its temporary files and says so.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[derive(Debug, thiserror::Error)]
#[error("interrupted: nothing was left behind; run the same command again to start over")]
pub struct Interrupted;

/// Installs the handler once; later calls are no-ops.
pub fn install() {
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
}

pub fn check() -> Result<(), Interrupted> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(Interrupted)
    } else {
        Ok(())
    }
}
