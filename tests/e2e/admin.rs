//! `chat-admin`: read commands against a live cluster, cluster-wide bans, purge, exit codes.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use crate::support::client::TestClient;
use crate::support::node::{eventually, run_with_timeout, Env, ADMIN};
use crate::support::services::free_port;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn ban_broadcasts_resume_soon_after_a_redis_restart() {
    let mut env = Env::private("adm_ban_redis");
    // Polls the table only every 600 s: after the restart, the ban must come as a broadcast.
    let node = env.node("a", &["--bans-poll", "600"]);
    let subscriptions = |node: &crate::support::node::Node| {
        node.log().matches("subscribed to ban broadcasts").count()
    };
    eventually("subscribed", Duration::from_secs(20), || {
        subscriptions(&node) == 1
    });
    env.redis_mut().kill();
    eventually("the loss is seen", Duration::from_secs(20), || {
        node.log().contains("lost the ban broadcast subscription")
    });
    std::thread::sleep(Duration::from_millis(500));
    env.redis_mut().restart();
    eventually("subscribed again", Duration::from_secs(20), || {
        subscriptions(&node) == 2
    });
    // Logged at warn once, however many retries it took.
    let log = node.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("\"WARN\"") && l.contains("ban broadcast"))
        .count();
    assert_eq!(warnings, 1, "{log}");

    let mut victim = node.connect();
    let id = victim.register();
    let out = env.admin(&["ban", &id]);
    assert!(out.status.success(), "{out:?}");
    victim.expect("BYE: banned");
}

#[test]
fn a_ban_reaches_every_node_and_an_unban_lifts_it() {
    let env = Env::new("adm_ban");
    // Node b polls the bans table only every 600 s: its kick must come from the Redis broadcast.
    // Node a polls every second: it sees a ban written to MySQL without any broadcast.
    let a = env.node("a", &["--bans-poll", "1"]);
    let b = env.node("b", &["--bans-poll", "600"]);
    // Both nodes listen before the ban: node a's refusal below must not wait for its next poll.
    eventually(
        "both nodes listen for ban broadcasts",
        Duration::from_secs(20),
        || {
            [&a, &b]
                .iter()
                .all(|n| n.log().contains("subscribed to ban broadcasts"))
        },
    );
    let mut victim = b.connect();
    let id = victim.register();

    let out = env.admin(&["ban", &id, "--reason", "abuse report 42"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), format!("banned: {id}"));
    victim.expect("BYE: banned");
    victim.expect_closed();
    // Each node applies the broadcast on its own; a connection a moment before it is served.
    for node in [&a, &b] {
        eventually("the ban reaches the node", Duration::from_secs(20), || {
            let mut again = node.connect();
            again.send(&id);
            let refused = again.line() == "ERROR: banned";
            if refused {
                again.expect_closed();
            }
            refused
        });
    }
    let bans = env.admin_json(&["bans"]);
    assert_eq!(bans["bans"][0]["entry"], id.as_str(), "{bans}");
    assert_eq!(bans["bans"][0]["reason"], "abuse report 42");
    let info = env.admin_json(&["client", &id]);
    assert_eq!(info["banned"], true, "{info}");

    // An address ban, written straight into MySQL (no broadcast): node a finds it by polling.
    env.query("INSERT INTO bans (entry) VALUES ('127.0.0.66')");
    let from = "127.0.0.66".parse().unwrap();
    eventually("node a refuses 127.0.0.66", Duration::from_secs(20), || {
        let mut c = TestClient::connect_from(from, a.addr());
        c.line() == "ERROR: banned"
    });
    let mut other = TestClient::connect_from("127.0.0.67".parse().unwrap(), a.addr());
    other.expect("GET_CLIENT_ID");

    // Unban: allowed again everywhere.
    let out = env.admin(&["unban", &id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), format!("unbanned: {id}"));
    for node in [&b, &a] {
        eventually(
            "the unbanned client is let in",
            Duration::from_secs(20),
            || {
                let mut c = node.connect();
                c.send(&id);
                let line = c.line();
                if line == format!("SET_CLIENT_ID: {id}") {
                    c.send("DISCONNECT");
                    c.expect("BYE: disconnected");
                    true
                } else {
                    assert_eq!(line, "ERROR: banned");
                    false
                }
            },
        );
    }
    // Unbanning again: not found.
    let out = env.admin(&["unban", &id]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(stderr(&out).contains("no cluster-wide ban"), "{out:?}");
    // Networks are stored in canonical form, so unban matches what ban stored.
    assert!(env.admin(&["ban", "10.1.2.3/8"]).status.success());
    assert_eq!(env.admin_json(&["bans"])["bans"][1]["entry"], "10.0.0.0/8");
    assert!(env.admin(&["unban", "10.0.0.0/8"]).status.success());
}

#[test]
fn read_commands_show_nodes_sessions_backlog_and_clients() {
    let env = Env::new("adm_read");
    let a = env.node("a", &[]);
    let b = env.node("b", &[]);
    let mut on_a = a.connect();
    let online = on_a.register();
    let mut on_b = b.connect();
    let other = on_b.register();
    let offline = a.register(1).remove(0);
    for i in 0..3 {
        env.enqueue(&offline, &format!("waiting {i}"));
    }
    env.enqueue(&online, "hello");
    assert_eq!(on_a.messages(1), vec!["hello"]);
    eventually("the delivery is recorded", Duration::from_secs(20), || {
        env.admin_json(&["client", &online])["delivered_seq"] == 1
    });

    // The session of `offline` has released its client (after its BYE).
    eventually("two sessions held", Duration::from_secs(20), || {
        env.admin_json(&["sessions"])["total"] == 2
    });
    let nodes = env.admin_json(&["nodes"]);
    for (node, sessions) in [(&a.node_id, 1), (&b.node_id, 1)] {
        let found = nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == node.as_str())
            .unwrap_or_else(|| panic!("{node} missing: {nodes}"));
        assert_eq!(found["sessions"], sessions, "{nodes}");
    }
    let text = stdout(&env.admin(&["nodes"]));
    assert!(
        text.contains(&a.node_id) && text.contains("live nodes"),
        "{text}"
    );

    let on_node = env.admin_json(&["sessions", "--node", &b.node_id]);
    assert_eq!(
        on_node["sessions"][0]["client_id"],
        other.as_str(),
        "{on_node}"
    );

    let backlog = env.admin_json(&["backlog", "--top", "5"]);
    assert_eq!(backlog["pending"], 3, "{backlog}");
    assert_eq!(backlog["clients"], 1);
    assert_eq!(backlog["top"][0]["client_id"], offline.as_str());
    assert_eq!(backlog["top"][0]["pending"], 3);

    let info = env.admin_json(&["client", &online]);
    assert_eq!(info["online"], true, "{info}");
    assert_eq!(info["lease"]["node"], a.node_id.as_str());
    assert_eq!(info["holder_node"], a.node_id.as_str());
    assert_eq!(info["pending"], 0);
    assert_eq!(info["stored"], 1);
    assert_eq!(info["banned"], false);
    let info = env.admin_json(&["client", &offline]);
    assert_eq!(info["online"], false, "{info}");
    assert_eq!(info["pending"], 3);
    assert_eq!(info["last_seq"], 3);
    assert!(info["holder_node"].is_null(), "{info}");
    let text = stdout(&env.admin(&["client", &offline]));
    assert!(text.contains("pending       3"), "{text}");
}

#[test]
fn purge_deletes_old_delivered_messages_only() {
    let env = Env::new("adm_purge");
    let node = env.node("a", &["--retention", "off"]);
    let mut c = node.connect();
    let id = c.register();
    let away = node.register(1).remove(0);
    for i in 0..3 {
        env.enqueue(&id, &format!("m{i}"));
        env.enqueue(&away, &format!("kept {i}"));
    }
    assert_eq!(c.messages(3), vec!["m0", "m1", "m2"]);
    eventually(
        "the deliveries are recorded",
        Duration::from_secs(20),
        || env.count("SELECT COALESCE(SUM(delivered_seq), 0) FROM cursors") == 3,
    );
    env.enqueue(&id, "young");
    assert_eq!(c.messages(1), vec!["young"]);
    env.query("UPDATE messages SET enqueued_at = NOW(6) - INTERVAL 3 DAY WHERE body <> 'young'");
    // Nothing is old enough at 4 days.
    assert_eq!(
        env.admin_json(&["purge", "--older-than", "4d"])["deleted"],
        0
    );
    let out = env.admin(&["purge", "--older-than", "2", "--batch", "2"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), "deleted 3 delivered messages");
    assert_eq!(env.count("SELECT COUNT(*) FROM messages"), 4);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM messages WHERE body LIKE 'kept%'"),
        3
    );
    // Delivery goes on.
    env.enqueue(&id, "after");
    assert_eq!(c.messages(1), vec!["after"]);
}

#[test]
fn one_purge_at_a_time() {
    let env = Env::new("adm_lock");
    let _node = env.node("a", &["--retention", "off"]);
    // Another purger holds the lock (a mariadb client session, kept open).
    let mut holder = env
        .mariadb()
        .client()
        .args(["--batch", "--skip-column-names", "--unbuffered"])
        .arg(format!("--database={}", env.database))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mariadb client");
    let mut stdin = holder.stdin.take().unwrap();
    writeln!(
        stdin,
        "SELECT GET_LOCK(CONCAT('chat-retention:', DATABASE()), 0);"
    )
    .unwrap();
    let mut got = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut got)
        .unwrap();
    assert_eq!(got.trim(), "1");
    let out = env.admin(&["purge", "--older-than", "1d"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("another purge is running"), "{out:?}");
    // Its session ends: the lock is free again.
    drop(stdin);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(
        env.admin_json(&["purge", "--older-than", "1d"])["deleted"],
        0
    );
}

#[test]
fn errors_have_documented_exit_codes() {
    let env = Env::new("adm_exit");
    let _node = env.node("a", &[]);
    let code = |args: &[&str]| env.admin(args).status.code();
    assert_eq!(code(&[]), Some(2));
    assert_eq!(code(&["frobnicate"]), Some(2));
    assert_eq!(code(&["client", "not-an-id"]), Some(2));
    assert_eq!(code(&["ban", "999.1.1.1"]), Some(2));
    assert_eq!(code(&["purge", "--older-than", "soon"]), Some(2));
    assert_eq!(code(&["purge"]), Some(2));
    let unknown = uuid_like();
    let out = env.admin(&["client", &unknown]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(stderr(&out).contains("unknown client id"), "{out:?}");
    // MySQL unreachable: 1, with a clear message.
    let nowhere = format!("mysql://root@127.0.0.1:{}/chat", free_port());
    let out = env.admin(&["--database-url", &nowhere, "backlog"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("MySQL at mysql://root@127.0.0.1:"),
        "{out:?}"
    );
    // Redis unreachable for a command that needs it: 1.
    let nowhere = format!("redis://127.0.0.1:{}/", free_port());
    let out = env.admin(&["--redis-url", &nowhere, "nodes"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("Redis at redis://127.0.0.1:"),
        "{out:?}"
    );
    // A ban needs only MySQL: without Redis it is stored (exit 0), with a warning that nodes
    // take it at their next poll.
    let out = env.admin(&["--redis-url", &nowhere, "ban", "192.0.2.1"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr(&out).contains("warning"), "{out:?}");
    assert_eq!(env.admin_json(&["bans"])["bans"][0]["entry"], "192.0.2.1");
}

#[test]
fn json_failures_are_one_document_on_stdout_too() {
    let env = Env::new("adm_json_fail");
    let _node = env.node("a", &[]);
    let json = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_str(stdout(out).trim())
            .unwrap_or_else(|e| panic!("not one JSON document on stdout ({e}): {out:?}"))
    };
    // No such client: exit 3.
    let out = env.admin(&["--json", "client", &uuid_like()]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let doc = json(&out);
    assert_eq!(doc["exit"], 3, "{doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("unknown client id"),
        "{doc}"
    );
    assert!(stderr(&out).contains("unknown client id"), "{out:?}");
    // Invalid arguments: exit 2, from argument parsing as well as from the command's checks.
    for args in [
        &["--json", "ban", "999.1.1.1"][..],
        &["--json", "frobnicate"][..],
        &["purge", "--json", "--older-than", "soon"][..],
    ] {
        let out = env.admin(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_eq!(json(&out)["exit"], 2, "{args:?}: {out:?}");
        assert!(!stderr(&out).is_empty(), "{args:?}: {out:?}");
    }
    // MySQL unreachable: exit 1.
    let nowhere = format!("mysql://root@127.0.0.1:{}/chat", free_port());
    let out = env.admin(&["--json", "--database-url", &nowhere, "backlog"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(json(&out)["exit"], 1, "{out:?}");
    // Without --json, stdout stays empty on failure.
    let out = env.admin(&["client", &uuid_like()]);
    assert_eq!(stdout(&out), "", "{out:?}");
}

/// A well-formed client id that no client has.
fn uuid_like() -> String {
    "0b3e3f8a-6a57-4f0e-9d6c-2f1f6f1de6a4".to_string()
}

#[test]
fn connection_flags_go_before_or_after_the_subcommand() {
    let env = Env::new("adm_flags");
    let node = env.node("a", &[]);
    let offline = node.register(1).remove(0);
    env.enqueue(&offline, "waiting");
    let (db, redis) = (env.db_url.as_str(), env.redis_url.as_str());
    let orders: [&[&str]; 3] = [
        &[
            "--database-url",
            db,
            "--redis-url",
            redis,
            "--json",
            "client",
            &offline,
        ],
        &[
            "--json",
            "client",
            &offline,
            "--database-url",
            db,
            "--redis-url",
            redis,
        ],
        &[
            "--redis-url",
            redis,
            "--json",
            "client",
            "--database-url",
            db,
            &offline,
        ],
    ];
    for args in orders {
        // No URLs in the environment: the flags are what it uses.
        let mut cmd = env.command(ADMIN, args);
        cmd.env_remove("CHAT_DATABASE_URL")
            .env_remove("CHAT_REDIS_URL");
        let out = run_with_timeout(&mut cmd);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(found["last_seq"], 1, "{args:?}: {found}");
    }
    // After the subcommand, the flag wins over the environment too.
    let nowhere = format!("mysql://root@127.0.0.1:{}/chat", free_port());
    let out = env.admin(&["client", &offline, "--database-url", &nowhere]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}
