//! The command line's shape: every role and command of the interface is
//! there, and a wrong invocation is a usage error (exit 2).

use std::process::Command;

fn weir(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .expect("run weir")
}

#[test]
fn help_lists_every_command() {
    let out = weir(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for command in [
        "dev", "api", "worker", "enqueue", "queues", "jobs", "workers",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(command)),
            "`{command}` missing:\n{text}"
        );
    }
}

#[test]
fn a_wrong_invocation_exits_2() {
    assert_eq!(weir(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(weir(&["worker", "-c", "many"]).status.code(), Some(2));
    assert_eq!(weir(&["jobs"]).status.code(), Some(2));
}
