//! The one way the tools ask before they destroy or trust something: the
//! operator types a word shown to them (the device or host name for what is
//! erased, `yes` for a fingerprint they compared). `--yes` skips the
//! question; without a terminal and without `--yes` the answer is no.

use std::io::{BufRead, IsTerminal, Write};

use crate::exit::{Class, Classify};

#[derive(Debug, thiserror::Error)]
pub enum Declined {
    #[error("not confirmed: {what} was not done; nothing was changed")]
    NotConfirmed { what: String },
    #[error("no terminal to confirm on: {hint}")]
    NoTerminal { hint: String },
    #[error("cannot read the answer: {0}")]
    Io(#[from] std::io::Error),
}

impl Classify for Declined {
    fn class(&self) -> Class {
        match self {
            Declined::Io(_) => Class::Failure,
            _ => Class::Refused,
        }
    }
}

/// A question whose answer must be typed exactly.
pub struct Confirm<'a> {
    /// Shown above the question (the plan, the device, the fingerprint).
    pub context: &'a str,
    /// What is done if confirmed, for the refusal message ("write /dev/sdb").
    pub action: &'a str,
    /// The word to type.
    pub word: &'a str,
    /// How to go on without a terminal ("pass --yes", "pass --fingerprint").
    pub without_terminal: &'a str,
}

impl Confirm<'_> {
    /// Asks on the terminal (stderr, stdin), or takes `yes` as given.
    pub fn ask(&self, yes: bool) -> Result<(), Declined> {
        if yes {
            return Ok(());
        }
        if !std::io::stdin().is_terminal() {
            return Err(Declined::NoTerminal { hint: self.without_terminal.to_string() });
        }
        let answer = self.ask_on(&mut std::io::stdin().lock(), &mut std::io::stderr())?;
        if answer == self.word {
            Ok(())
        } else {
            Err(Declined::NotConfirmed { what: self.action.to_string() })
        }
    }

    fn ask_on(&self, input: &mut dyn BufRead, output: &mut dyn Write) -> std::io::Result<String> {
        if !self.context.is_empty() {
            writeln!(output, "{}", self.context.trim_end())?;
        }
        write!(output, "Type `{}` to {}: ", self.word, self.action)?;
        output.flush()?;
        let mut line = String::new();
        input.read_line(&mut line)?;
        Ok(line.trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_must_be_typed_and_yes_skips_the_question() {
        let q = Confirm {
            context: "disk /dev/sdb, 32 GB",
            action: "erase /dev/sdb",
            word: "sdb",
            without_terminal: "pass --yes",
        };
        let mut shown = Vec::new();
        let answer = q.ask_on(&mut &b"sdb\n"[..], &mut shown).unwrap();
        assert_eq!(answer, "sdb");
        assert_eq!(
            String::from_utf8(shown).unwrap(),
            "disk /dev/sdb, 32 GB\nType `sdb` to erase /dev/sdb: "
        );
        assert!(q.ask(true).is_ok());
    }
}
