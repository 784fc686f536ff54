//! `labimg completions SHELL`: what both tools promise of their completions
//! (lab_testkit::check_completions), for labimg's commands.

#[test]
fn completions_parse_name_every_command_and_survive_a_closed_pipe() {
    lab_testkit::check_completions(
        env!("CARGO_BIN_EXE_labimg"),
        &["build", "inspect", "firmware", "devices", "flash", "verify", "completions"],
    );
}
