//! The README's commands as a new user types them: every `mezz …` line of
//! its shell blocks names subcommands and flags that exist, and every file
//! a command hands to a task is named so that the task, which runs in its
//! sandbox on an agent, can find it.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// The `mezz …` command lines of the README's ```sh blocks (comments and
/// line continuations removed). In a block with `$ ` prompts, only the
/// prompted lines are commands; the rest is their output.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in readme.lines() {
        match (&mut block, line) {
            (None, "```sh") => block = Some(Vec::new()),
            (Some(_), l) if l.starts_with("```") => blocks.extend(block.take()),
            (Some(b), l) => b.push(l),
            (None, _) => {}
        }
    }
    let mut commands = Vec::new();
    for block in blocks {
        let prompted = block.iter().any(|l| l.starts_with("$ "));
        let mut pending = String::new();
        for line in block {
            let line = match (prompted, line.strip_prefix("$ ")) {
                (true, Some(l)) => l,
                (true, None) if pending.is_empty() => continue,
                _ => line,
            };
            let line = line.split(" # ").next().unwrap_or(line).trim_end();
            if pending.is_empty() && !line.starts_with("mezz ") && !line.contains("&& mezz ") {
                continue;
            }
            match line.strip_suffix('\\') {
                Some(start) => pending.push_str(start),
                None => {
                    pending.push_str(line);
                    commands.push(std::mem::take(&mut pending));
                }
            }
        }
    }
    commands
}

#[test]
fn the_readme_commands_name_real_subcommands_and_flags() {
    let commands = readme_commands();
    assert!(commands.len() > 20, "found too few: {commands:?}");
    for command in &commands {
        let command = command.rsplit("&& ").next().unwrap_or(command);
        // A command sent to the background (`mezz dev &`) would run for
        // real: check how it parses like the others.
        let command = command.trim_end_matches('&').trim_end();
        // What goes to the task after `--` is not ours to parse; `…` and
        // `...` stand for more of the same.
        let ours = command.split(" -- ").next().unwrap_or(command);
        // So does an application after its options (`mezz spark submit
        // … app.py ARGS`): `--help` after it would be the application's.
        let ours: Vec<&str> = ours
            .split_whitespace()
            .filter(|w| *w != "..." && *w != "…")
            .take_while(|w| !(w.ends_with(".py") || w.ends_with(".jar")))
            .collect();
        let line = format!("\"$MEZZ\" {} --help", ours[1..].join(" "));
        let out = Command::new("bash")
            .args(["-c", &line])
            .env("MEZZ", MEZZ)
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "README: `{command}` does not parse: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn scripts_the_readme_hands_to_tasks_are_absolute_and_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for command in readme_commands() {
        let Some((_, task)) = command.split_once(" -- ") else {
            continue;
        };
        for word in task.split_whitespace() {
            let word = word.trim_matches('"');
            if !word.ends_with(".py") && !word.ends_with(".sh") {
                continue;
            }
            let Some(rel) = word.strip_prefix("$PWD/") else {
                panic!(
                    "README: `{command}` names {word}, which a task in its sandbox cannot find; \
                     write \"$PWD/{word}\""
                );
            };
            assert!(root.join(rel).is_file(), "README: `{command}`: no {rel}");
            checked += 1;
        }
    }
    assert!(checked > 0, "the TensorFlow example names its script");
}
