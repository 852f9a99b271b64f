//! `c2c network-logs [--app APP] [--follow]`: the local platform's traffic logs, merged from
//! every cell's agent (`<cell>/cni/network.log`, one JSON line per logged packet) in time
//! order, optionally only those naming one app.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use crate::{Paths, PlatformInfo};

/// Whether `line` (JSON) names `app` as its source or destination.
pub fn names_app(line: &str, app: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .is_ok_and(|v| v["source"]["app"] == app || v["destination"]["app"] == app)
}

fn logs(state_dir: &Path) -> Result<Vec<PathBuf>> {
    let paths = Paths::new(state_dir);
    let info = PlatformInfo::load(&paths)?;
    Ok(info
        .cells
        .iter()
        .map(|c| paths.cell(&c.name).join("cni").join("network.log"))
        .collect())
}

/// Prints the logs (then, with `follow`, what comes next, until interrupted).
pub fn show(state_dir: &Path, app: Option<&str>, follow: bool) -> Result<()> {
    let files = logs(state_dir)?;
    let keep = |l: &str| !l.trim().is_empty() && app.is_none_or(|a| names_app(l, a));
    // What is there now, every cell's lines merged by time (RFC 3339 sorts as text).
    let mut offsets = vec![0u64; files.len()];
    let mut now: Vec<(String, String)> = vec![];
    for (i, f) in files.iter().enumerate() {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        offsets[i] = text.len() as u64;
        for l in text.lines().filter(|l| keep(l)) {
            let t = serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["time"].as_str().map(str::to_string))
                .unwrap_or_default();
            now.push((t, l.to_string()));
        }
    }
    now.sort();
    for (_, l) in &now {
        println!("{l}");
    }
    if !follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(Duration::from_millis(250));
        for (i, f) in files.iter().enumerate() {
            let Ok(mut file) = std::fs::File::open(f) else {
                continue;
            };
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if len < offsets[i] {
                // Truncated or replaced: start over.
                offsets[i] = 0;
            }
            if len == offsets[i] {
                continue;
            }
            file.seek(SeekFrom::Start(offsets[i]))?;
            let mut new = String::new();
            file.read_to_string(&mut new)?;
            // Only whole lines; a partial last line waits for its end.
            let whole = new.rfind('\n').map_or(0, |n| n + 1);
            offsets[i] += whole as u64;
            for l in new[..whole].lines().filter(|l| keep(l)) {
                println!("{l}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn filters_by_either_end() {
        let l = r#"{"source":{"app":"appa"},"destination":{"app":"appb"}}"#;
        assert!(super::names_app(l, "appa") && super::names_app(l, "appb"));
        assert!(!super::names_app(l, "appc"));
        assert!(!super::names_app("not json", "appa"));
    }
}
