//! `chat-enqueue`'s command line: connection flags on either side of `status`, help, text words.

use std::process::{Command, Output};

use crate::support::node::{run_with_timeout, Env, ENQUEUE};
use crate::support::services::free_port;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs chat-enqueue with `args` and no CHAT_DATABASE_URL / CHAT_REDIS_URL in its environment,
/// so that the URLs it uses are the ones on its command line.
fn without_env(env: &Env, args: &[&str]) -> Output {
    let mut cmd = env.command(ENQUEUE, args);
    cmd.env_remove("CHAT_DATABASE_URL")
        .env_remove("CHAT_REDIS_URL");
    run_with_timeout(&mut cmd)
}

fn assert_exit(out: &Output, code: i32, args: &[&str]) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: stdout {} stderr {}",
        stdout(out),
        stderr(out)
    );
}

#[test]
fn status_takes_the_connection_flags_before_after_or_from_the_environment() {
    let env = Env::new("eqa_status");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let client = c.register();
    let out = env.enqueue_raw(&["--wait=10", &client, "hello"]);
    assert_exit(&out, 0, &[]);
    assert_eq!(c.messages(1), vec!["hello"]);
    let id = stdout(&out).lines().next().unwrap().trim().to_string();
    let (db, redis) = (env.db_url.as_str(), env.redis_url.as_str());
    let expected = format!("{id} delivered client={client} seq=1 queued=");
    let orders: [&[&str]; 4] = [
        &["--database-url", db, "--redis-url", redis, "status", &id],
        &["status", "--database-url", db, &id, "--redis-url", redis],
        &["--redis-url", redis, "status", "--database-url", db, &id],
        &["--database-url", db, "status", "--json", &id],
    ];
    for args in orders {
        let out = without_env(&env, args);
        assert_exit(&out, 0, args);
        if args.contains(&"--json") {
            let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(found[0]["state"], "delivered", "{args:?}: {found}");
            assert_eq!(found[0]["client_id"], client.as_str(), "{args:?}: {found}");
        } else {
            assert!(
                stdout(&out).starts_with(&expected),
                "{args:?}: {}",
                stdout(&out)
            );
        }
    }
    // The environment alone.
    let out = env.enqueue_raw(&["status", &id]);
    assert_exit(&out, 0, &[]);
    assert!(stdout(&out).starts_with(&expected), "{}", stdout(&out));
    // On either side, the flag is what is used, over the environment.
    let nowhere = format!("mysql://root@127.0.0.1:{}/chat", free_port());
    for args in [
        ["--database-url", &nowhere, "status", &id],
        ["status", "--database-url", &nowhere, &id],
    ] {
        let out = env.enqueue_raw(&args);
        assert_exit(&out, 1, &args);
        assert!(
            stderr(&out).contains("cannot read the messages in MySQL"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn text_after_the_id_stays_text_even_status_and_flag_like_words() {
    let env = Env::new("eqa_text");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let client = c.register();
    let flags = ["--database-url", &env.db_url, "--redis-url", &env.redis_url];
    let cases: [(&[&str], &str); 4] = [
        (&[&client, "status", "report"], "status report"),
        (&[&client, "status"], "status"),
        (&[&client, "--not-a-flag"], "--not-a-flag"),
        (&[&client, "status", "--json", "1"], "status --json 1"),
    ];
    for (args, text) in cases {
        // With the URLs from the environment, then on the command line before the id.
        let with_flags = [&flags[..], args].concat();
        for out in [env.enqueue_raw(args), without_env(&env, &with_flags)] {
            assert_exit(&out, 0, args);
            let id = stdout(&out).trim().parse::<u64>();
            assert!(id.is_ok(), "{args:?}: no message id in {}", stdout(&out));
            assert_eq!(c.messages(1), vec![text], "{args:?}");
        }
    }
}

#[test]
fn help_lists_status_and_status_has_its_own_help() {
    let help = |args: &[&str]| {
        let out = run_with_timeout(Command::new(ENQUEUE).args(args));
        assert_exit(&out, 0, args);
        stdout(&out)
    };
    let top = help(&["--help"]);
    assert!(top.contains("Commands:"), "{top}");
    assert!(
        top.lines().any(|l| l.trim_start().starts_with("status ")),
        "{top}"
    );
    assert!(top.contains("status [--json] <MESSAGE_ID>..."), "{top}");
    for args in [
        &["status", "--help"][..],
        &["--database-url", "mysql://x/y", "status", "-h"],
    ] {
        let own = help(args);
        assert!(
            own.contains("Usage: chat-enqueue status"),
            "{args:?}: {own}"
        );
        for flag in ["--json", "--database-url", "--redis-url", "<MESSAGE_ID>"] {
            assert!(own.contains(flag), "{args:?}: {flag} not in {own}");
        }
        assert!(!own.contains("--ttl"), "{args:?}: {own}");
    }
}

#[test]
fn a_wrong_flag_exits_2_with_a_clear_message_and_stores_nothing() {
    let env = Env::new("eqa_wrong");
    let node = env.node("a", &[]);
    let client = node.register(1).remove(0);
    let cases: [(&[&str], &str); 9] = [
        (
            &["--no-such-flag", &client, "hi"],
            "unexpected argument '--no-such-flag' found",
        ),
        (
            &["--tll", "5", &client, "hi"],
            "unexpected argument '--tll'",
        ),
        (&["--ttl", "5", "status", "1"], "--ttl is an enqueue flag"),
        (&["--wait", "status", "1"], "--wait is an enqueue flag"),
        (&["--stdin", "status", "1"], "--stdin is an enqueue flag"),
        (
            &["status", "--ttl", "5", "1"],
            "unexpected argument '--ttl'",
        ),
        (
            &["--no-such-flag", "status", "1"],
            "unexpected argument '--no-such-flag' found",
        ),
        (&["status"], "required arguments were not provided"),
        (&["status", "x1"], "invalid value 'x1'"),
    ];
    for (args, text) in cases {
        let out = env.enqueue_raw(args);
        assert_exit(&out, 2, args);
        assert!(stderr(&out).contains(text), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}: {}", stdout(&out));
    }
    assert_eq!(env.count("SELECT COUNT(*) FROM messages"), 0);
}
