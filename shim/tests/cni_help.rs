//! `c2c-cni --help` says what the plugin is (it was a CNI error object), while a runtime's call
//! (no arguments, CNI_COMMAND set) still speaks only the spec.

use std::process::{Command, Stdio};

#[test]
fn help_is_for_people_and_the_protocol_for_runtimes() {
    let bin = env!("CARGO_BIN_EXE_c2c-cni");
    let o = Command::new(bin)
        .arg("--help")
        .env_remove("CNI_COMMAND")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("the c2c CNI plugin") && out.contains("CNI_COMMAND"),
        "{out}"
    );
    // Positive control: a runtime's VERSION is the spec's JSON, whatever else is asked.
    let o = Command::new(bin)
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["supportedVersions"].as_array().unwrap().len() >= 2, "{v}");
}
