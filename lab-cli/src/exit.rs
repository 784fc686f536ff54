//! The exit-code contract of both tools and the one place that prints an
//! error. Scripts can tell the classes apart without parsing messages:
//!
//! | code | class | meaning |
//! |---|---|---|
//! | 0 | | done |
//! | 1 | [`Class::Failure`] | something failed; the message says what and what to do |
//! | 2 | [`Class::Usage`] | the command line is wrong (clap's own code for usage errors) |
//! | 3 | [`Class::Mismatch`] | a verification found a difference (device vs image, key vs pin) |
//! | 4 | [`Class::Refused`] | a safety check refused, or the operator did not confirm; nothing was changed |
//! | 130 | [`Class::Interrupted`] | Ctrl-C; the message says what state is left and how to resume |

use std::process::ExitCode;

/// What kind of failure an error is, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Failure,
    Usage,
    Mismatch,
    Refused,
    Interrupted,
}

impl Class {
    pub fn code(self) -> u8 {
        match self {
            Class::Failure => 1,
            Class::Usage => 2,
            Class::Mismatch => 3,
            Class::Refused => 4,
            Class::Interrupted => 130,
        }
    }
}

/// Implemented by the libraries' error types whose variants are not all
/// plain failures (a refusal, a mismatch, an interruption).
pub trait Classify {
    fn class(&self) -> Class;
}

/// The class of an error chain: the most specific class any link claims.
/// `links` names the library error types the binary knows how to ask.
pub fn classify(
    err: &anyhow::Error,
    links: &[fn(&(dyn std::error::Error + 'static)) -> Option<Class>],
) -> Class {
    let mut class = Class::Failure;
    for cause in err.chain() {
        if cause.downcast_ref::<crate::interrupt::Interrupted>().is_some() {
            return Class::Interrupted;
        }
        if let Some(t) = cause.downcast_ref::<crate::tool::ToolError>() {
            class = class.max(t.class());
        }
        if let Some(p) = cause.downcast_ref::<crate::prompt::Declined>() {
            class = class.max(p.class());
        }
        for link in links {
            if let Some(c) = link(cause) {
                class = class.max(c);
            }
        }
    }
    class
}

/// A link for [`classify`] from any error type that implements [`Classify`].
pub fn link<E: Classify + std::error::Error + 'static>(
    cause: &(dyn std::error::Error + 'static),
) -> Option<Class> {
    cause.downcast_ref::<E>().map(Classify::class)
}

/// The message of an error chain on one line: each cause after a colon,
/// except a cause whose text its parent already printed (errors that both
/// format and chain their source would otherwise say it twice).
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let text = text.trim();
        // Only a parent that ends with the cause printed it: a short cause
        // ("Permission denied") may appear inside other words by chance.
        if text.is_empty() || parts.last().is_some_and(|p| p.ends_with(text)) {
            continue;
        }
        parts.push(text.to_string());
    }
    parts.join(": ")
}

/// The whole of a binary's `main`: install Ctrl-C handling, run, and turn
/// the result into one `TOOL: error: ...` line and the contract's code.
/// A message that carries a tool's own output keeps it on the lines after.
pub fn main(
    tool: &str,
    links: &[fn(&(dyn std::error::Error + 'static)) -> Option<Class>],
    run: impl FnOnce() -> anyhow::Result<()>,
) -> ExitCode {
    crate::interrupt::install();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Whatever failed after Ctrl-C failed because of it.
            let class = if crate::interrupt::requested() {
                Class::Interrupted
            } else {
                classify(&err, links)
            };
            let mut line = one_line(&err);
            // Both tools resume or start over cleanly; every interruption
            // says so, whichever step it stopped.
            if class == Class::Interrupted && !line.contains("again") {
                line.push_str("; run the same command again");
            }
            eprintln!("{tool}: error: {line}");
            ExitCode::from(class.code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn a_cause_its_parent_already_printed_is_said_once() {
        let io = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "No such file or directory (os error 2)",
        );
        let err = anyhow::Error::new(Read { path: "/x", source: io }).context("load the firmware");
        assert_eq!(
            one_line(&err),
            "load the firmware: cannot read /x: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn the_most_specific_class_wins_and_codes_are_the_contract() {
        let err = anyhow::Error::new(crate::interrupt::Interrupted).context("build");
        assert_eq!(classify(&err, &[]), Class::Interrupted);
        let refused = anyhow::Error::new(crate::prompt::Declined::NotConfirmed {
            what: "write /dev/sdb".into(),
        });
        assert_eq!(classify(&refused, &[]), Class::Refused);
        assert_eq!(classify(&anyhow::anyhow!("plain"), &[]), Class::Failure);
        let codes: Vec<u8> =
            [Class::Failure, Class::Usage, Class::Mismatch, Class::Refused, Class::Interrupted]
                .map(Class::code)
                .to_vec();
        assert_eq!(codes, vec![1, 2, 3, 4, 130]);
    }
}
