//! Progress bars and spinners for long work, drawn on stderr only when it is
//! a terminal and the tool is not quiet (`--json`).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

#[derive(Debug, Clone, Copy)]
pub struct Progress {
    visible: bool,
}

/// The tool's own: shown on a terminal unless the tool is quiet.
impl Default for Progress {
    fn default() -> Progress {
        Progress::new(crate::output::quiet())
    }
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress { visible: !quiet && std::io::stderr().is_terminal() }
    }

    pub fn visible(&self) -> bool {
        self.visible
    }

    pub fn hidden() -> Progress {
        Progress { visible: false }
    }

    fn target(&self) -> ProgressDrawTarget {
        if self.visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        }
    }

    /// A bar over `total` bytes.
    pub fn bytes(&self, phase: &str, total: u64) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(Some(total), self.target());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(phase.to_string());
        bar
    }

    /// A spinner for a step whose length we cannot know (an external tool).
    pub fn step(&self, phase: &str, message: &str) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(None, self.target());
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} {spinner} {msg} {elapsed}")
                .expect("static template"),
        );
        bar.set_prefix(phase.to_string());
        bar.set_message(message.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    }
}
