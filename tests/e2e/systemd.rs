//! The shipped systemd unit: `systemd-analyze verify` passes without a warning, and the hardening stays in.

use std::path::Path;
use std::process::Command;

use crate::support::node::run_with_timeout;

const SERVER: &str = env!("CARGO_BIN_EXE_chat-server");
const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/chat-server.service");
const ANALYZE: &str = "/usr/bin/systemd-analyze";

/// The unit with ExecStart pointing at the binary just built (verify needs it to exist).
fn unit_for_test(dir: &Path) -> String {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/chat-server --config /etc/chat/chat-server.toml")
    );
    let unit = unit.replace(
        "ExecStart=/usr/local/bin/chat-server",
        &format!("ExecStart={SERVER}"),
    );
    let path = dir.join("chat-server.service");
    std::fs::write(&path, unit).unwrap();
    path.display().to_string()
}

#[test]
fn the_unit_is_hardened() {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    for line in [
        "User=chat",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "LimitNOFILE=65536",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "EnvironmentFile=-/etc/chat/chat-server.env",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "{line} missing from the unit"
        );
    }
    // TimeoutStopSec is above the node's default shutdown timeout.
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.parse().ok())
        .expect("TimeoutStopSec in seconds");
    assert!(stop > chat::config::DEFAULT_SHUTDOWN_TIMEOUT.as_secs());
}

#[test]
fn systemd_analyze_verifies_the_unit_without_warnings() {
    if !Path::new(ANALYZE).exists() {
        eprintln!("{ANALYZE} not installed: the unit is not verified here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    let out = run_with_timeout(Command::new(ANALYZE).args(["verify", &unit]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "warnings: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
