//! The clap arguments both binaries share (the `clap` feature): one `--json`
//! switch with one help line, and shell completions written whole.

/// The `--json` switch every reporting command flattens in.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct JsonArg {
    /// Print the result as JSON on stdout (progress and narration off).
    #[arg(long)]
    pub json: bool,
}

impl JsonArg {
    /// Makes the tool quiet on stderr under `--json`; returns the switch.
    pub fn init(self) -> bool {
        crate::output::set_quiet(self.json);
        self.json
    }
}

/// The shell of `TOOL completions SHELL`, and the run that writes the script.
#[derive(clap::Args, Debug)]
pub struct ShellArg {
    /// The shell to complete for.
    shell: clap_complete::Shell,
}

impl ShellArg {
    /// Generated whole, then written: a closed pipe (`| head`) ends quietly,
    /// a full disk under `> file` is an error.
    pub fn run(self, mut cli: clap::Command) -> anyhow::Result<()> {
        let name = cli.get_name().to_string();
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut cli, name, &mut script);
        crate::output::stdout(&script)
    }
}
