//! ROOT TEST: the web console in a real browser. `c2c up` prints `console: URL` (a 127.0.0.1
//! port on the host, carried by the platform's relay into the underlay, with the admin's token
//! as Jupyter's token URL has it); Debian's Chromium, headless, opens it, follows the login's
//! redirect with the cookie it was given, and renders the service map: the apps by space, the
//! policy between them as an edge. Without the token it gets the login page and nothing of the
//! platform. Run as root (CI does, with the chromium package `.ci/run` installs);
//! `C2C_SKIP_ROOT_TESTS=1` skips it.

use std::process::Command;

use c2c_integration::cli::*;
use c2c_integration::topo::require_root;

/// The DOM Chromium renders for `url` (headless, a profile of its own in a temp dir).
fn rendered(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
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
fn root_the_console_renders_the_service_map_in_a_browser() {
    if !require_root() {
        return;
    }
    let platform = TempPlatform::up(&["--cells", "2"]);
    let dir = platform.dir();
    for app in ["appa", "appb"] {
        ok(dir, &["create-app", app]);
    }
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

    // With the token URL: logged in, the map.
    let dom = rendered(&url);
    assert!(dom.contains("<h1>c2c: service map</h1>"), "{dom}");
    assert!(
        dom.contains(">appa</text>") && dom.contains(">appb</text>"),
        "{dom}"
    );
    assert!(dom.contains("tcp 8080"), "the policy is an edge: {dom}");
    assert!(dom.contains("default/default"), "apps by space: {dom}");

    // Without it: the login page, nothing of the platform.
    let root = url.split("/login").next().unwrap();
    let dom = rendered(&format!("{root}/"));
    assert!(dom.contains("name=\"token\""), "{dom}");
    assert!(!dom.contains("appa"), "{dom}");
}
