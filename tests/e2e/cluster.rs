//! Several nodes behind one database and one Redis: targeted notifications, roaming clients.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::node::{signal, Env};
use crate::support::services::shared_redis;

#[test]
fn an_enqueue_reaches_only_the_node_holding_the_client() {
    let env = Env::new("cl_target");
    let a = env.node("a", &[]);
    let b = env.node("b", &[]);
    let c = env.node("c", &[]);

    // Listen on every node's channel, as a fourth party.
    let channels: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|n| format!("chat:node:{}", n.node_id))
        .collect();
    let mut spy = Command::new("redis-cli")
        .args([
            "-p",
            &shared_redis().port().to_string(),
            "--csv",
            "SUBSCRIBE",
        ])
        .args(&channels)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-cli");
    let mut spy_out = BufReader::new(spy.stdout.take().unwrap());
    let mut confirmed = 0;
    while confirmed < 3 {
        let mut line = String::new();
        assert!(spy_out.read_line(&mut line).unwrap() > 0, "redis-cli ended");
        if line.starts_with("\"subscribe\"") {
            confirmed += 1;
        }
    }

    let mut on_a = a.connect();
    let id_a = on_a.register();
    let mut on_b = b.connect();
    let id_b = on_b.register();
    let mut on_c = c.connect();
    let id_c = on_c.register();

    // chat-enqueue knows nothing of node B: only the database and Redis URLs.
    env.enqueue(&id_b, "for b only");
    assert_eq!(on_b.messages(1), vec!["for b only"]);
    on_a.expect_silence(Duration::from_millis(300));
    on_c.expect_silence(Duration::from_millis(300));

    // Exactly one notification, on B's channel.
    let mut line = String::new();
    spy_out.read_line(&mut line).unwrap();
    // It carries the message itself (the node writes it without a read).
    assert!(
        line.contains(&format!("chat:node:{}", b.node_id))
            && line.contains(&format!("msgs\\n{id_b} "))
            && line.contains("for b only"),
        "{line}"
    );
    signal(spy.id(), "TERM");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut spy_out, &mut rest);
    assert!(!rest.contains("wake"), "other notifications: {rest}");
    let _ = spy.wait();

    // Delivered once: the other clients, and B after a reconnect, get nothing more.
    on_b.send("DISCONNECT");
    on_b.expect("BYE: disconnected");
    let mut again = c.connect();
    again.resume(&id_b);
    again.expect_silence(Duration::from_millis(1500));
    let _ = (id_a, id_c);
}

#[test]
fn an_offline_client_gets_its_messages_on_another_node() {
    let env = Env::new("cl_roam");
    let a = env.node("a", &[]);
    let c = env.node("c", &[]);
    let mut on_a = a.connect();
    let id = on_a.register();
    env.enqueue(&id, "while online");
    assert_eq!(on_a.messages(1), vec!["while online"]);
    on_a.send("DISCONNECT");
    on_a.expect("BYE: disconnected");
    on_a.expect_closed();

    for i in 0..3 {
        env.enqueue(&id, &format!("while offline {i}"));
    }
    let mut on_c = c.connect();
    on_c.resume(&id);
    assert_eq!(
        on_c.messages(3),
        vec!["while offline 0", "while offline 1", "while offline 2"]
    );
    env.enqueue(&id, "live on c");
    assert_eq!(on_c.messages(1), vec!["live on c"]);
}

#[test]
fn a_client_moving_to_another_node_takes_its_session_along() {
    let env = Env::new("cl_move");
    let a = env.node("a", &[]);
    let b = env.node("b", &[]);
    let mut on_a = a.connect();
    let id = on_a.register();
    let mut on_b = b.connect();
    on_b.resume(&id);
    on_a.expect("BYE: session taken over by a newer connection");
    on_a.expect_closed();
    env.enqueue(&id, "after the move");
    assert_eq!(on_b.messages(1), vec!["after the move"]);
}

#[test]
fn nodes_starting_together_apply_each_migration_once() {
    let env = Env::new("cl_migrate");
    let nodes: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = ["x", "y", "z"]
            .iter()
            .map(|name| s.spawn(|| env.node(name, &[])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(nodes.len(), 3);
    // Every file of sql/, once each, in order.
    let mut files: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/sql"))
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .into_string()
                .ok()?
                .strip_suffix(".sql")
                .map(String::from)
        })
        .collect();
    files.sort();
    let expected: Vec<Vec<String>> = files
        .iter()
        .map(|name| vec![name[..4].trim_start_matches('0').to_string(), name.clone()])
        .collect();
    assert!(expected.len() >= 4, "{expected:?}");
    assert_eq!(
        env.query("SELECT version, name FROM schema_migrations ORDER BY version"),
        expected
    );
    for node in &nodes {
        let mut client = node.connect();
        client.register();
    }
}

#[test]
fn an_older_session_cannot_overwrite_a_newer_lease() {
    use chat::bus::{Bus, Owner};
    let redis = shared_redis();
    let id = chat::ClientId::random();
    let owner = |node: &str, epoch| Owner {
        node: node.to_string(),
        epoch,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bus = Bus::connect(&redis.url()).await.unwrap();
        let lease = Duration::from_secs(30);
        assert_eq!(bus.claim(id, &owner("b", 7), lease).await.unwrap(), None);
        // The older claim loses and learns who is newer.
        let newer = bus.claim(id, &owner("a", 6), lease).await.unwrap();
        assert_eq!(newer, Some(owner("b", 7)));
        assert_eq!(bus.owner(id).await.unwrap(), Some(owner("b", 7)));
        // Its release does not touch the newer lease either.
        bus.release(id, &owner("a", 6)).await.unwrap();
        assert_eq!(bus.owner(id).await.unwrap(), Some(owner("b", 7)));
        // A newer one still replaces it.
        let previous = bus.claim(id, &owner("c", 8), lease).await.unwrap();
        assert_eq!(previous, Some(owner("b", 7)));
        assert_eq!(bus.owner(id).await.unwrap(), Some(owner("c", 8)));
    });
}
