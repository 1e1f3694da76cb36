//! The terminal status line: on a terminal (a pseudo-terminal from util-linux's
//! `script`), `sluice run` rewrites one live line instead of printing a line per batch;
//! through a pipe it prints plain lines.

mod common;

use std::process::Command;

use common::*;

const ARGS: [&str; 9] = [
    "run",
    "queries/vulnerabilities_by_ip.sql",
    "--source",
    "generator:30000",
    "--available-now",
    "--max-records-per-batch",
    "10000",
    "--num-rows",
    "0",
];

#[test]
fn a_terminal_gets_a_live_line_and_a_pipe_gets_plain_lines() {
    // Through a pipe: one plain line per batch, no terminal control codes.
    let (_, piped) = run_ok(&ARGS);
    assert!(!piped.contains('\x1b') && !piped.contains('\r'), "{piped}");
    assert_eq!(parse_offsets(&piped).len(), 3, "{piped}");

    // On a pseudo-terminal: the same run rewrites one line in place.
    let command = format!(
        "cd {} && {} {}",
        repo().display(),
        env!("CARGO_BIN_EXE_sluice"),
        ARGS.join(" ")
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("util-linux `script` is needed for this test (.ci/run installs bsdutils)");
    assert!(out.status.success(), "{out:?}");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(
        parse_offsets(&tty).is_empty(),
        "no per-batch lines on a terminal:\n{tty}"
    );
    let updates: Vec<&str> = tty.split("\r\x1b[2K").skip(1).collect();
    for id in 0..3 {
        assert!(
            updates
                .iter()
                .any(|u| u.starts_with(&format!("batch {id} │ in "))),
            "no live line for batch {id}:\n{tty:?}"
        );
    }
    // Results printed to the same terminal never run into a live line: each live line
    // is cleared before anything else is written.
    let live: Vec<&&str> = updates.iter().filter(|u| u.starts_with("batch ")).collect();
    for u in &live[..live.len() - 1] {
        assert!(!u.contains('\n'), "output ran into a live line: {u:?}");
    }
    // Messages still arrive as whole lines, and the last live line stays on screen.
    assert!(
        tty.contains("[sluice] stopped; the next batch id is 3"),
        "{tty:?}"
    );
    let last = tty.trim_end().rsplit("\r\x1b[2K").nth(1).unwrap_or("");
    assert!(
        last.contains("batch 2 │") && last.contains("lag 0"),
        "{tty:?}"
    );
}
