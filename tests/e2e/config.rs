//! The TOML config file: precedence (flag > env > file > default), `--check-config`, and the shipped example.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use crate::support::node::{run_with_timeout, spawn_logged, Env};
use crate::support::services::free_port;
use crate::support::tls::{cert_path, key_path, make_cert};

const SERVER: &str = env!("CARGO_BIN_EXE_chat-server");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/chat-server.toml");

/// `chat-server` with a clean environment plus `env`.
fn server(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(SERVER);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The port a node started with `args` and `env` listens on (then stops it).
fn listening_port(args: &[&str], env: &[(&str, &str)]) -> u16 {
    let mut cmd = server(env);
    cmd.args(["--log-format", "json"]).args(args);
    let (mut child, _log, port) = spawn_logged(cmd);
    let _ = child.kill();
    let _ = child.wait();
    port.unwrap_or_else(|log| panic!("node did not start:\n{log}"))
}

fn check(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_with_timeout(server(env).arg("--check-config").args(args))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
    let env = Env::new("cfg_prec");
    let dir = tempfile::tempdir().unwrap();
    let (from_file, from_env, from_flag) = (free_port(), free_port(), free_port());
    let file = write(
        dir.path(),
        "chat.toml",
        &format!(
            "port = {from_file}\nbind = [\"127.0.0.1\"]\ndatabase-url = \"{}\"\nredis-url = \"{}\"\n\
             node-id = \"{}\"\n",
            env.db_url,
            env.redis_url,
            env.node_id("a")
        ),
    );
    // File over default (8000): the node listens where the file says, on the file's URLs.
    assert_eq!(listening_port(&["--config", &file], &[]), from_file);
    // CHAT_CONFIG names the file too.
    assert_eq!(listening_port(&[], &[("CHAT_CONFIG", &file)]), from_file);
    // Environment over file.
    let port_env = from_env.to_string();
    assert_eq!(
        listening_port(&["--config", &file], &[("CHAT_PORT", &port_env)]),
        from_env
    );
    // Flag over environment.
    assert_eq!(
        listening_port(
            &["--config", &file, "--port", &from_flag.to_string()],
            &[("CHAT_PORT", &port_env)]
        ),
        from_flag
    );
}

#[test]
fn check_config_reports_what_is_wrong_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "good.toml",
        "max-line = 2048\nban = [\"10.0.0.0/8\", \"192.0.2.7\"]\nretention = \"12h\"\n",
    );
    let out = check(&["--config", &good], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // Every duration flag takes plain seconds and units alike.
    let durations = write(
        dir.path(),
        "durations.toml",
        "retention-interval = \"5s\"\ndrain-delay = \"1m\"\nlease = \"30s\"\nnode-ttl = 5\n\
         handshake-timeout = \"500ms\"\nwrite-timeout = 2.5\nbans-poll = \"1h 30m\"\n",
    );
    let out = check(&["--config", &durations], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = check(&["--config", &good], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("OK") && text.contains("max-line"), "{text}");
    // Overridden keys are not in effect.
    let out = check(&["--config", &good], &[("CHAT_MAX_LINE", "100")]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("max-line"),
        "{out:?}"
    );

    let cases: &[(&str, &str)] = &[
        (
            "port = 1\n\nmax-lines = 5\n",
            ":3: unknown key \"max-lines\"",
        ),
        (
            "port = \"eighty\"\n",
            ":1: key \"port\": invalid value 'eighty'",
        ),
        (
            "max-line = true\n",
            ":1: key \"max-line\": invalid value 'true'",
        ),
        ("check-config = true\n", ":1: unknown key \"check-config\""),
        ("node-id = \"a|b\"\n", "invalid node id"),
        (
            "ban = [\"nonsense\"]\n",
            "is not an IP address, network or client id",
        ),
        ("ban = \"10.0.0.0/33\"\n", "bad prefix length"),
        ("retention = \"7w\"\n", "key \"retention\""),
        (
            "port = 1\n[server]\nport = 1\n",
            ":2: [server]: tables are not supported",
        ),
        ("port = = 1\n", ":1: invalid TOML"),
        // The whole list of missing flags, not just the sentence before it.
        (
            "tls-port = 8643\n",
            "the following required arguments were not provided: --tls-cert <TLS_CERT> --tls-key <TLS_KEY>",
        ),
        // A bad ban names its line and key.
        (
            "port = 1\nban = [\"1.2.3.4\", \"5\"]\n",
            ":2: key \"ban\": invalid value '5'",
        ),
        // Zero limits are refused, not clamped.
        ("max-line = 0\n", ":1: key \"max-line\": invalid value '0'"),
        ("max-line = 15\n", ":1: key \"max-line\": invalid value '15'"),
        (
            "max-connections = 0\n",
            ":1: key \"max-connections\": invalid value '0'",
        ),
        ("db-pool = 0\n", ":1: key \"db-pool\": invalid value '0'"),
        // Durations: below the minimum where a tiny value breaks the node.
        ("lease = 0.001\n", ":1: key \"lease\": invalid value '0.001'"),
        ("node-ttl = \"10ms\"\n", ":1: key \"node-ttl\""),
        ("retention = \"1e-12s\"\n", ":1: key \"retention\""),
        ("sweep-interval = \"5x\"\n", ":1: key \"sweep-interval\""),
        // The same port twice.
        (
            "port = 8600\ntls-port = 8600\ntls-cert = \"c\"\ntls-key = \"k\"\n",
            "port 8600 is used twice: --port and --tls-port",
        ),
        (
            "port = 8601\nmetrics-addr = \"127.0.0.1:8601\"\n",
            "port 8601 is used twice: --port and --metrics-addr",
        ),
        // TLS files are loaded as the node loads them.
        (
            "tls-port = 8643\ntls-cert = \"/nonexistent/cert.pem\"\ntls-key = \"/nonexistent/key.pem\"\n",
            "/nonexistent/cert.pem",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = write(dir.path(), &format!("bad{i}.toml"), text);
        let out = check(&["--config", &path], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {out:?}");
        assert!(
            err.contains(&path) || !expected.starts_with(':'),
            "{text:?}: {err}"
        );
        assert!(
            err.contains(expected),
            "{text:?}: expected {expected:?} in {err}"
        );
    }
    // A missing file.
    let out = check(&["--config", "/nonexistent/chat.toml"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
    // The node itself refuses a bad file the same way, before touching MySQL.
    let bad = write(dir.path(), "bad.toml", "max-lines = 5\n");
    let out = run_with_timeout(server(&[]).args(["--config", &bad]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown key \"max-lines\""));
}

#[test]
fn check_config_loads_the_tls_files_as_the_node_does() {
    let dir = tempfile::tempdir().unwrap();
    make_cert(dir.path(), "localhost");
    let (cert, key) = (cert_path(dir.path()), key_path(dir.path()));
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let out = check(
        &["--tls-port", "0", "--tls-cert", &cert, "--tls-key", &key],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A key that is not a key: refused with the file named.
    let out = check(
        &["--tls-port", "0", "--tls-cert", &cert, "--tls-key", &cert],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&cert),
        "{out:?}"
    );
}

/// Long flag names in `chat-server --help`.
fn help_flags() -> BTreeSet<String> {
    let out = run_with_timeout(server(&[]).arg("--help"));
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    help.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("-").map_or(line, |_| {
                line.split_once(", ").map_or(line, |(_, rest)| rest)
            });
            let name = line.strip_prefix("--")?;
            Some(name.split([' ', '=']).next()?.to_string())
        })
        .filter(|name| !["help", "version", "config", "check-config"].contains(&name.as_str()))
        .collect()
}

#[test]
fn the_example_config_is_valid_and_names_every_flag() {
    let example = std::fs::read_to_string(EXAMPLE).unwrap();
    let out = check(&["--config", EXAMPLE], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // Every key, uncommented, is valid too (the shown defaults and examples parse).
    let uncommented: String = example
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| is_key(k)) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    // The TLS files it names exist only on a real host: real ones made here instead.
    let dir = tempfile::tempdir().unwrap();
    make_cert(dir.path(), "localhost");
    let uncommented = uncommented
        .replace(
            "/etc/chat/cert.pem",
            &cert_path(dir.path()).display().to_string(),
        )
        .replace(
            "/etc/chat/key.pem",
            &key_path(dir.path()).display().to_string(),
        );
    let all = write(dir.path(), "all.toml", &uncommented);
    let out = check(&["--config", &all], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let keys: BTreeSet<String> = uncommented
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.to_string()))
        .filter(|k| is_key(k))
        .collect();
    let flags = help_flags();
    assert!(flags.len() > 20, "{flags:?}");
    let missing: Vec<_> = flags.difference(&keys).collect();
    assert!(
        missing.is_empty(),
        "deploy/chat-server.toml lacks {missing:?}"
    );
    let extra: Vec<_> = keys.difference(&flags).collect();
    assert!(
        extra.is_empty(),
        "deploy/chat-server.toml has unknown {extra:?}"
    );
}

fn is_key(k: &str) -> bool {
    !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
}
