//! ROOT TEST: gRPC and HTTP/2 between apps through the sidecar (issue #29), with clients nobody
//! here wrote: PyPI's `grpcio` (a server with the standard health service from
//! `grpcio-health-checking` as appB, a client in appA's container calling `Check` over TLS to
//! `appb.apps.internal:61443`, verifying the platform root), curl and openssl. Refused before
//! appB declares `http2` (gRPC clients require `h2` in ALPN), SERVING after, refused again
//! without a policy; `curl --http2` agrees on `h2` with an `http1,http2` app and on nothing
//! (HTTP/1.1) with an `http1` one; `openssl s_client -alpn http/1.1` gets the
//! no_application_protocol alert from an `http2` app. Run as root (CI does).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use c2c_integration::cli::*;
use c2c_integration::topo::{require_root, wait_until};

/// Where the tests' Python with grpcio lives (a venv of Debian's python3, made here once;
/// `.ci/run` makes it before the tests).
const VENV: &str = "/opt/c2c-test/grpc-venv";

/// The venv's interpreter, with grpcio and grpcio-health-checking from PyPI.
fn grpc_python() -> PathBuf {
    let python = Path::new(VENV).join("bin/python");
    let has = |p: &Path| {
        Command::new(p)
            .args(["-c", "import grpc, grpc_health.v1"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(&python) {
        let run = |cmd: &Path, args: &[&str]| {
            let o = Command::new(cmd).args(args).output().unwrap();
            assert!(
                o.status.success(),
                "{} {args:?}: {}",
                cmd.display(),
                String::from_utf8_lossy(&o.stderr)
            );
        };
        run(Path::new("/usr/bin/python3"), &["-m", "venv", VENV]);
        run(
            &Path::new(VENV).join("bin/pip"),
            &["install", "-q", "grpcio", "grpcio-health-checking"],
        );
    }
    assert!(has(&python), "grpcio is not importable from {VENV}");
    python
}

const SERVER: &str = r#"
import sys, time
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
h = health.HealthServicer()
h.set("", health_pb2.HealthCheckResponse.SERVING)
health_pb2_grpc.add_HealthServicer_to_server(h, server)
# Cleartext HTTP/2 with prior knowledge, as gRPC servers listen on an insecure port.
server.add_insecure_port("0.0.0.0:8080")
server.start()
print("grpc health server on 8080", flush=True)
server.wait_for_termination()
"#;

const CLIENT: &str = r#"
import os, sys
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
root = open(os.path.join(os.environ["CF_SYSTEM_CERT_PATH"], "c2c-platform-ca.pem"), "rb").read()
channel = grpc.secure_channel(sys.argv[1], grpc.ssl_channel_credentials(root_certificates=root))
try:
    r = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))
except grpc.RpcError as e:
    print("RPC_ERROR", e.code().name, e.details())
    sys.exit(1)
"#;

/// `c2c exec APP -- sh -c SCRIPT`: (exit code, stdout and stderr).
fn sh(dir: &Path, app: &str, script: &str) -> (i32, String) {
    let o = c2c(dir, &["exec", app, "--", "sh", "-c", script]);
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn root_grpc_between_apps_once_the_destination_declares_http2() {
    if !require_root() {
        return;
    }
    let python = grpc_python();
    let scripts = tempfile::tempdir().unwrap();
    let (server, client) = (
        scripts.path().join("server.py"),
        scripts.path().join("client.py"),
    );
    std::fs::write(&server, SERVER).unwrap();
    std::fs::write(&client, CLIENT).unwrap();
    let platform = TempPlatform::up(&["--cells", "2"]);
    let dir = platform.dir();
    ok(dir, &["push", "appA", "--cell", "cell1"]);
    let serve = format!("{} -u {}", python.display(), server.display());
    ok(
        dir,
        &["push", "appB", "--cell", "cell2", "--command", &serve],
    );
    ok(dir, &["push", "appC", "--cell", "cell2"]);
    allow(dir, "appA", "appB", "61443");
    allow(dir, "appA", "appC", "61443");
    let call = format!(
        "{} {} appb.apps.internal:61443",
        python.display(),
        client.display()
    );
    let curl_v = |host: &str| {
        format!("curl -sv --http2 --max-time 5 --cacert \"$CF_SYSTEM_CERT_PATH/c2c-platform-ca.pem\" https://{host}.apps.internal:61443/ -o /dev/null")
    };

    // The policy is in force (a TLS handshake with appB's sidecar completes) ...
    wait_until(
        "appA reaches appB's sidecar",
        Duration::from_secs(15),
        || {
            sh(dir, "appA", &curl_v("appb"))
                .1
                .contains("SSL connection using")
        },
    );
    // ... yet gRPC is refused while appB declares nothing: its sidecar agrees on no protocol.
    let (code, out) = sh(dir, "appA", &call);
    assert_ne!(code, 0, "gRPC without h2 in ALPN: {out}");
    assert!(out.contains("RPC_ERROR UNAVAILABLE"), "{out}");

    // appB speaks HTTP/2: its sidecar offers h2, at once, without a restart.
    let shown = ok(dir, &["update-app", "appB", "--app-protocol", "http2"]);
    assert!(shown.contains("app protocol http2"), "{shown}");
    assert!(ok(dir, &["app", "appB"]).contains("app protocol:    http2"));
    wait_until("gRPC health Check SERVING", Duration::from_secs(15), || {
        sh(dir, "appA", &call).1.trim() == "SERVING"
    });
    // A client that offers only HTTP/1.1 gets the no_application_protocol alert.
    let (_, out) = sh(
        dir,
        "appA",
        "openssl s_client -connect appb.apps.internal:61443 -servername appb.apps.internal -alpn http/1.1 </dev/null",
    );
    assert!(out.contains("no application protocol"), "{out}");
    // And h2 with one that offers it.
    let (_, out) = sh(
        dir,
        "appA",
        "openssl s_client -connect appb.apps.internal:61443 -servername appb.apps.internal -alpn h2 </dev/null",
    );
    assert!(out.contains("ALPN protocol: h2"), "{out}");

    // curl --http2: h2 with an http1,http2 app, nothing agreed (HTTP/1.1) with an http1 one.
    let (_, out) = sh(dir, "appA", &curl_v("appc"));
    assert!(out.contains("ALPN: server did not agree"), "{out}");
    assert!(out.contains("HTTP/1.1 200"), "{out}");
    ok(
        dir,
        &["update-app", "appC", "--app-protocol", "http1,http2"],
    );
    wait_until(
        "curl --http2 agrees on h2 with appC",
        Duration::from_secs(15),
        || {
            sh(dir, "appA", &curl_v("appc"))
                .1
                .contains("ALPN: server accepted h2")
        },
    );

    // Without a policy, gRPC is refused again (the packet filter; the sidecar is not reached).
    ok(
        dir,
        &[
            "remove-network-policy",
            "appA",
            "appB",
            "--protocol",
            "tcp",
            "--port",
            "61443",
        ],
    );
    wait_until(
        "gRPC refused without a policy",
        Duration::from_secs(15),
        || sh(dir, "appA", &call).0 != 0,
    );
}
