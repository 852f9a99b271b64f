//! The end of a soak: what the database should no longer hold, what the host should no longer
//! have, and the processes' memory.

/// What the database holds that it should not, once the churn has stopped: `policies` is how
/// many policies the last acknowledged changes left.
pub(super) fn consistency(pg: &c2c_testkit::pg_cluster::PgCluster, policies: u8) -> Vec<String> {
    let q = |sql: &str| -> Vec<Vec<Option<String>>> {
        pg.query("c2c", sql).unwrap_or_else(|e| panic!("{e}"))
    };
    let one = |sql: &str| -> String { q(sql)[0][0].clone().unwrap_or_default() };
    let mut bad = vec![];
    let left: Vec<String> = q("SELECT name FROM apps WHERE name LIKE 'churn%'")
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    if !left.is_empty() {
        bad.push(format!("apps the churn deleted are still there: {left:?}"));
    }
    let shared = one("SELECT count(*) FROM apps a JOIN tag_groups t ON t.tag = a.tag");
    if shared != "0" {
        bad.push(format!(
            "{shared} tags held by an app and a tag group at once"
        ));
    }
    let lost = one("SELECT count(*) FROM instances WHERE cell NOT IN (SELECT name FROM cells)");
    if lost != "0" {
        bad.push(format!("{lost} instances on cells control does not know"));
    }
    let instances = one("SELECT count(*) FROM instances");
    if instances != "3" {
        bad.push(format!("{instances} instances, not the soak's 3"));
    }
    let leases = q("SELECT count(*), count(DISTINCT subnet) FROM cells");
    if leases[0] != [Some("3".into()), Some("3".into())] {
        bad.push(format!(
            "cells and distinct leases: {:?}, not 3 and 3",
            leases[0]
        ));
    }
    let found = one("SELECT count(*) FROM policies");
    if found != policies.to_string() {
        bad.push(format!(
            "{found} policies; the last acknowledged changes left {policies}"
        ));
    }
    bad
}

/// What is left on the host of a soak whose platform is gone: this process's test namespaces,
/// processes still running from its directories, the directories themselves.
pub(super) fn leaks(dirs: &[std::path::PathBuf]) -> Vec<String> {
    let mut left = vec![];
    let mine = format!("-{}-", std::process::id());
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("c2ct-") && n.contains(&mine) {
            left.push(format!("namespace {n}"));
        }
    }
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if dirs
            .iter()
            .any(|d| cmd.contains(d.to_str().unwrap_or("\0")))
        {
            left.push(format!("process {pid}: {}", cmd.trim()));
        }
    }
    for d in dirs {
        if d.exists() {
            left.push(format!("directory {}", d.display()));
        }
    }
    left
}
