//! `c2c completion SHELL`: a script made from the CLI's own arguments, which the shell loads and
//! completes verbs and flags with (bash, driven as its completion machinery drives it).

use std::process::Command;

fn script(shell: &str) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_c2c"))
        .args(["completion", shell])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// What bash completes `words` (the last one being typed) to.
fn complete(script: &str, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script).unwrap();
    let driver = format!(
        "source {}\nCOMP_WORDS=({line}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; _c2c c2c '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.path().display(),
        words.len() - 1,
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let o = Command::new("bash").args(["-c", &driver]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_verbs_and_flags() {
    let bash = script("bash");
    assert_eq!(
        complete(&bash, &["c2c", "add-net"]),
        ["add-network-policy"],
        "a verb"
    );
    let flags = complete(&bash, &["c2c", "update-app", "--app"]);
    assert!(flags.contains(&"--app-protocol".to_string()), "{flags:?}");
    assert!(complete(&bash, &["c2c", "sc"]).contains(&"scale".to_string()));
    for shell in ["zsh", "fish"] {
        assert!(script(shell).contains("add-network-policy"), "{shell}");
    }
}
