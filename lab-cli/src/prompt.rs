//! The one way the tools ask before they destroy or trust something: the
//! operator types a word shown to them (the device or host name for what is
//! erased, `yes` for a fingerprint they compared). `--yes` skips the
//! question; without a terminal and without `--yes` the answer is no.
//!
//! Secrets (a LUKS passphrase) are asked the same way, on the terminal
//! only, without echo: [`passphrase`].

use std::io::{BufRead, IsTerminal, Read, Write};

use zeroize::Zeroizing;

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

/// A secret read from the operator or a file: zeroed when dropped, never
/// shown (its `Debug` prints no bytes).
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Asks for a passphrase on the terminal without echo (`PROMPT: `), twice
/// when `confirm` ("again to be safe", until both agree, as disko asks). No
/// terminal on stdin is [`Declined::NoTerminal`]: a secret is never read
/// from a pipe that might be a script's. The newline ending the line is
/// not part of it; an empty passphrase is asked again.
pub fn passphrase(prompt: &str, confirm: bool) -> Result<Secret, Declined> {
    if !std::io::stdin().is_terminal() {
        return Err(Declined::NoTerminal {
            hint: "a passphrase is only read from a terminal".into(),
        });
    }
    let mut tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    loop {
        let first = read_hidden(&mut tty, &format!("{prompt}: "))?;
        if first.is_empty() {
            writeln!(tty, "An empty passphrase is not accepted; please try again.")?;
            continue;
        }
        if !confirm {
            return Ok(Secret::new(first.to_vec()));
        }
        let again = read_hidden(&mut tty, &format!("{prompt} (again to be safe): "))?;
        if *first == *again {
            return Ok(Secret::new(first.to_vec()));
        }
        writeln!(tty, "Passphrases did not match, please try again.")?;
    }
}

/// One line from the terminal with echo off (`stty -echo`, restored even
/// when reading fails), without its newline. Read a byte at a time straight
/// into memory that is zeroed when dropped: no buffer keeps a copy. The end
/// of input (a hung-up terminal, Ctrl-D) declines.
fn read_hidden(tty: &mut std::fs::File, prompt: &str) -> Result<Zeroizing<Vec<u8>>, Declined> {
    write!(tty, "{prompt}")?;
    tty.flush()?;
    let echo = EchoOff::new()?;
    let mut line = Zeroizing::new(Vec::new());
    let mut byte = [0u8; 1];
    let ended = loop {
        match tty.read(&mut byte) {
            Ok(0) => break Ok(false),
            Ok(_) if byte[0] == b'\n' => break Ok(true),
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        }
    };
    zeroize::Zeroize::zeroize(&mut byte);
    drop(echo);
    writeln!(tty)?;
    let complete = ended?;
    if crate::interrupt::requested() {
        return Err(Declined::NotConfirmed { what: "reading the passphrase (Ctrl-C)".into() });
    }
    if !complete {
        return Err(Declined::NotConfirmed {
            what: "reading the passphrase (end of input)".into(),
        });
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(line)
}

/// Terminal echo switched off for as long as this lives. `stty` through the
/// one runner, on the controlling terminal: the crate has no termios of its
/// own, and this is the only place that needs it.
struct EchoOff;

impl EchoOff {
    fn new() -> Result<EchoOff, Declined> {
        crate::Cmd::new("stty")
            .args([TTY_FLAG, "/dev/tty", "-echo"])
            .run()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(EchoOff)
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // Not through the one runner: after Ctrl-C it starts nothing, and
        // echo must come back then most of all.
        let _ = std::process::Command::new("stty")
            .args([TTY_FLAG, "/dev/tty", "echo"])
            .stdin(std::process::Stdio::null())
            .status();
    }
}

/// How stty names the terminal to act on: GNU `-F`, BSD/macOS `-f`.
#[cfg(target_os = "linux")]
const TTY_FLAG: &str = "-F";
#[cfg(not(target_os = "linux"))]
const TTY_FLAG: &str = "-f";

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

    #[test]
    fn a_secret_never_shows_its_bytes() {
        let s = Secret::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "Secret(7 bytes)");
        assert_eq!(s.as_bytes(), b"hunter2");
    }

    #[test]
    fn a_passphrase_is_never_read_without_a_terminal() {
        if std::io::stdin().is_terminal() {
            return; // run by hand on a terminal: nothing to check here
        }
        assert!(matches!(passphrase("p", true), Err(Declined::NoTerminal { .. })));
    }
}
