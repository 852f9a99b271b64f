//! `c2c-cni`: the CNI plugin (spec 1.0.0 and 1.1.0). A runtime runs it with CNI_* variables set and the
//! network config on stdin; it prints the result (or the error object) on stdout.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    // Runtimes pass no arguments; a person asking for help does.
    let asked = std::env::args()
        .skip(1)
        .any(|a| ["--help", "-h", "help", "--version", "-V"].contains(&a.as_str()));
    if asked && std::env::var_os("CNI_COMMAND").is_none() {
        println!(
            "c2c-cni {}: the c2c CNI plugin (spec 1.0.0 and 1.1.0).\n\n\
             A container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, VERSION, and from\n\
             cniVersion 1.1.0 STATUS, GC), CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME set and the\n\
             network config on stdin: the cell agent's /etc/cni/net.d/10-c2c.conflist. Install it\n\
             where runtimes look for plugins (/opt/cni/bin). Results and errors are the spec's JSON\n\
             on stdout.\n\n\
             Try: CNI_COMMAND=VERSION c2c-cni </dev/null",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    if std::env::var_os("CNI_COMMAND").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdin())
    {
        eprintln!(
            "c2c-cni is a CNI plugin: a container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, VERSION,\n\
             and from cniVersion 1.1.0 STATUS, GC), CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME set and\n\
             the network config JSON on stdin.\n\
             Try: CNI_COMMAND=VERSION c2c-cni </dev/null"
        );
        return ExitCode::from(64);
    }
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let out = c2c_shim::plugin::run(|k| std::env::var(k).ok(), &stdin);
    let mut stdout = std::io::stdout().lock();
    match out {
        Ok(Some(v)) => {
            let _ = writeln!(stdout, "{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(stdout, "{}", serde_json::to_string(&e).unwrap_or_default());
            eprintln!("c2c-cni: {}: {}", e.msg, e.details);
            ExitCode::FAILURE
        }
    }
}
