//! `labprov completions SHELL`: what both tools promise of their completions
//! (lab_testkit::check_completions), for labprov's commands.

#[test]
fn completions_parse_name_every_command_and_survive_a_closed_pipe() {
    lab_testkit::check_completions(
        env!("CARGO_BIN_EXE_labprov"),
        &["disk", "keys", "secrets", "enrol", "install", "completions"],
    );
}
