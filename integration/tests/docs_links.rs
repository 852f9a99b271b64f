//! The docs a newcomer walks: every relative link in README.md, docs/*.md and bench/README.md
//! names a file that exists and, with `#anchor`, a heading of that file (GitHub's slugs); the
//! README stays a front page (under 200 lines) and links every page of docs/.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn pages() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md"), root().join("bench/README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    out.extend(docs);
    out
}

/// GitHub's anchor for a heading: lower case; letters, digits, `-` and `_` kept, spaces to
/// `-`, everything else dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The headings of a page, outside code blocks.
fn anchors(text: &str) -> Vec<String> {
    let mut code = false;
    let mut out = vec![];
    for line in text.lines() {
        if line.starts_with("```") {
            code = !code;
            continue;
        }
        if !code && line.starts_with('#') {
            out.push(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// `(target)` of each `[text](target)` outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut code = false;
    let mut out = vec![];
    for line in text.lines() {
        if line.starts_with("```") {
            code = !code;
            continue;
        }
        if code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = vec![];
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for target in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            checked += 1;
            let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let dest = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            if !dest.exists() {
                broken.push(format!("{}: {target}: no such file", page.display()));
                continue;
            }
            if !anchor.is_empty() {
                let dest_text = std::fs::read_to_string(&dest).unwrap();
                if !anchors(&dest_text).iter().any(|a| a == anchor) {
                    broken.push(format!("{}: {target}: no such heading", page.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked >= 14,
        "only {checked} links checked: is the parser broken?"
    );
}

#[test]
fn the_readme_is_a_front_page_linking_every_doc() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let n = readme.lines().count();
    assert!(n < 200, "README.md has {n} lines: move detail into docs/");
    // The two commands that set a fresh machine up.
    assert!(readme.contains("./target/release/c2c demo"));
    assert!(readme.contains("bash .ci/run"));
    for page in pages().iter().skip(1) {
        let rel = page.strip_prefix(root()).unwrap().display().to_string();
        assert!(
            readme.contains(&format!("]({rel})")),
            "README.md does not link {rel}"
        );
    }
}

#[test]
fn the_checker_finds_a_broken_link() {
    // Positive control for the parser and the slugs.
    assert_eq!(
        links("see [a](x.md#y) and [b](../z.md)\n```\n[c](code.md)\n```"),
        ["x.md#y", "../z.md"]
    );
    assert_eq!(
        slug(" The cell agent (`c2c-agent --help`)"),
        "the-cell-agent-c2c-agent---help"
    );
    assert_eq!(
        slug("Instance identity (`CF_INSTANCE_CERT`)"),
        "instance-identity-cf_instance_cert"
    );
}
