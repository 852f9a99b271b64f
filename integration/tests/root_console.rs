//! ROOT TEST: the web console in a real browser. `c2c up --log-c2c` prints `console: URL` (a
//! 127.0.0.1 port on the host, carried by the platform's relay into the underlay, with the
//! admin's token as Jupyter's token URL has it); Debian's Chromium, headless, opens it, follows
//! the login's redirect with the cookie it was given, and renders the service map: the apps by
//! space, the policy between them as an edge. A curl the policy does not allow is refused, and
//! the map shows that denied flow (the cell reported it to control). A screenshot of the map is
//! written to the test's output directory (`CARGO_TARGET_TMPDIR/console-map.png`). Without the
//! token it gets the login page and nothing of the platform. Run as root (CI does, with the
//! chromium package `.ci/run` installs); `C2C_SKIP_ROOT_TESTS=1` skips it.

use std::process::Command;
use std::time::Duration;

use c2c_integration::cli::*;
use c2c_integration::topo::{eventually, require_root};

/// Headless Chromium (a profile of its own in a temp dir) on `url`, with `what` (`--dump-dom`,
/// or `--screenshot=FILE`): its stdout.
fn chromium(url: &str, what: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--window-size=1000,600",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(what)
        .arg(url)
        .output()
        .expect("chromium (Debian's package; .ci/run installs it)");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn root_the_console_renders_the_service_map_and_a_denied_flow_in_a_browser() {
    if !require_root() {
        return;
    }
    let platform = TempPlatform::up(&["--cells", "2", "--log-c2c"]);
    let dir = platform.dir();
    ok(dir, &["push", "appa", "--cell", "cell1"]);
    ok(dir, &["push", "appb", "--cell", "cell2"]);
    ok(dir, &["push", "appc", "--cell", "cell1"]);
    allow(dir, "appa", "appb", "8080");
    let url = platform
        .up_output
        .lines()
        .find_map(|l| l.strip_prefix("console: "))
        .unwrap_or_else(|| panic!("no console line in {}", platform.up_output))
        .to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/login?token="),
        "{url}"
    );

    // With the token URL: logged in, the map with the apps and the policy's edge.
    let dom = chromium(&url, "--dump-dom");
    assert!(dom.contains("<h1>c2c: service map</h1>"), "{dom}");
    for app in ["appa", "appb", "appc"] {
        assert!(dom.contains(&format!(">{app}</text>")), "{app}: {dom}");
    }
    assert!(dom.contains("tcp 8080"), "the policy is an edge: {dom}");
    assert!(dom.contains("default/default"), "apps by space: {dom}");
    assert!(dom.contains("None reported"), "no denied flow yet: {dom}");

    // appc has no policy to appb: refused, logged on cell2, reported, and on the map.
    let b = ok(dir, &["app", "appb", "--json"]);
    let b: serde_json::Value = serde_json::from_str(&b).unwrap();
    let ip_b = b["instances"][0]["ip"].as_str().unwrap().to_string();
    let refused = c2c(
        dir,
        &[
            "exec",
            "appc",
            "--",
            "curl",
            "-s",
            "-m",
            "2",
            &format!("http://{ip_b}:8080/"),
        ],
    );
    assert_eq!(refused.status.code(), Some(7), "curl: connection refused");
    let dom = eventually(Duration::from_secs(15), || {
        let dom = chromium(&url, "--dump-dom");
        dom.contains("denied</text>").then_some(dom)
    })
    .expect("the denied flow on the map");
    assert!(
        dom.contains("<a href=\"/apps/appc\">appc</a></td><td><a href=\"/apps/appb\">appb</a></td><td class=\"bad\">"),
        "the denied flow's row: {dom}"
    );

    // A screenshot of the map, in the test's output directory.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-map.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&url, &format!("--screenshot={}", shot.display()));
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.len() > 1000 && png.starts_with(b"\x89PNG"),
        "{}",
        shot.display()
    );

    // The cells report the revision they acted on: both are at control's.
    let (hostport, token) = url
        .strip_prefix("http://")
        .and_then(|r| r.split_once("/login?token="))
        .unwrap();
    let cells = eventually(Duration::from_secs(30), || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(hostport).ok()?;
        let req = format!("GET /cells HTTP/1.0\r\nCookie: c2c_console={token}\r\n\r\n");
        s.write_all(req.as_bytes()).ok()?;
        let mut page = String::new();
        s.read_to_string(&mut page).ok()?;
        (page.matches("(0 behind)").count() == 2).then_some(page)
    });
    assert!(
        cells.is_some(),
        "both cells at control's revision on /cells"
    );

    // Without the token: the login page, nothing of the platform.
    let root = url.split("/login").next().unwrap();
    let dom = chromium(&format!("{root}/"), "--dump-dom");
    assert!(dom.contains("name=\"token\""), "{dom}");
    assert!(!dom.contains("appa"), "{dom}");
}
