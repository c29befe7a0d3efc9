//! Fault tests: nodes, Redis and MySQL killed or restarted mid-stream; takeovers; slow readers;
//! rolling restarts; concurrent producers. Each checks, per client: all delivered, in order, and
//! copies only where the guarantee allows them.

use std::time::{Duration, Instant};

use crate::support::node::Env;
use crate::support::stream::{check, nodes, receive, receive_lingering, Copies};

const LIMIT: Duration = Duration::from_secs(90);

#[test]
fn kill_9_of_a_node_holding_100_clients_loses_nothing() {
    let env = Env::new("ft_kill9");
    let mut a = env.node("a", &[]);
    let b = env.node("b", &[]);
    let ids = a.register(100);
    let per_client = 20;
    // Everyone starts on A (the first address), acknowledged mode for half of them.
    let addrs = nodes(vec![a.addr(), b.addr()]);
    let receivers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| receive(id.clone(), i % 2 == 0, addrs.clone(), per_client, LIMIT))
        .collect();
    let producer = env.produce(&ids, per_client, Duration::from_millis(100));
    std::thread::sleep(Duration::from_millis(800));
    a.kill();
    let crash = Instant::now();
    addrs.lock().unwrap().retain(|addr| *addr != a.addr());
    producer.join().unwrap();
    for (i, r) in receivers.into_iter().enumerate() {
        let record = r.join().unwrap();
        assert!(record.sessions.len() >= 2, "{record:?}");
        let copies = if i % 2 == 0 {
            Copies::Unacked(vec![crash])
        } else {
            Copies::AfterReconnect
        };
        check(&record, per_client, &copies);
    }
    drop(b);
}

#[test]
fn redis_killed_and_restarted_mid_stream_loses_nothing() {
    let mut env = Env::private("ft_redis");
    // Slow sweeps: what arrives quickly after the restart came through Redis again.
    let a = env.node("a", &["--sweep-interval", "30"]);
    let b = env.node("b", &["--sweep-interval", "30"]);
    let mut ids = a.register(21);
    let id0 = ids.pop().unwrap();
    let per_client = 30;
    let addrs = nodes(vec![a.addr(), b.addr()]);
    // Half on each node, sessions never interrupted: every message exactly once.
    let receivers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let own = nodes(vec![if i % 2 == 0 { a.addr() } else { b.addr() }]);
            receive(id.clone(), false, own, per_client, LIMIT)
        })
        .collect();
    let producer = env.produce(&ids, per_client, Duration::from_millis(50));
    std::thread::sleep(Duration::from_millis(400));
    env.redis_mut().kill();
    // Enqueues go on while Redis is down.
    let out = env.enqueue_raw(&[&id0, "stored while redis was down"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
    std::thread::sleep(Duration::from_millis(1500));
    env.redis_mut().restart();
    producer.join().unwrap();
    let _ = addrs;
    for r in receivers {
        let record = r.join().unwrap();
        assert_eq!(record.sessions.len(), 1, "{record:?}");
        check(&record, per_client, &Copies::None);
    }
    // The message enqueued while Redis was down is there for its client.
    let mut c = a.connect();
    c.resume(&id0);
    assert_eq!(c.messages(1), vec!["stored while redis was down"]);
    // Notifications work again after the restart (well before the 30 s sweep).
    let start = Instant::now();
    env.enqueue(&id0, "after restart");
    assert_eq!(c.messages(1), vec!["after restart"]);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn mysql_stopped_and_restarted_mid_stream_keeps_sessions_and_loses_nothing() {
    let mut env = Env::private("ft_mysql");
    let a = env.node("a", &[]);
    let ids = a.register(10);
    let per_client = 20;
    let addrs = nodes(vec![a.addr()]);
    let receivers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| receive(id.clone(), i % 2 == 0, addrs.clone(), per_client, LIMIT))
        .collect();
    // First half, then MySQL goes away while it is being delivered.
    env.produce(&ids, per_client / 2, Duration::ZERO)
        .join()
        .unwrap();
    env.mariadb_mut().stop();
    let out = env.enqueue_raw(&[&ids[0], "lost?"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "enqueue with MySQL down must fail"
    );
    std::thread::sleep(Duration::from_secs(2));
    env.mariadb_mut().restart();
    // Second half, numbered after the first, through chat-enqueue (the real CLI).
    for n in per_client / 2..per_client {
        for id in &ids {
            env.enqueue(id, &n.to_string());
        }
    }
    for r in receivers {
        let record = r.join().unwrap();
        assert_eq!(record.sessions.len(), 1, "session dropped: {record:?}");
        check(&record, per_client, &Copies::None);
    }
    assert_eq!(env.count("SELECT COUNT(*) FROM messages"), 10 * per_client);
}

#[test]
fn takeover_while_messages_flow_delivers_nothing_twice() {
    let env = Env::new("ft_takeover");
    let a = env.node("a", &[]);
    let b = env.node("b", &[]);
    let ids = a.register(2);
    let per_client = 60;
    // Client 0 plain, client 1 acknowledged; each reads on A for a while, then (its session on A
    // still open) connects on B mid-stream.
    let on_a = nodes(vec![a.addr()]);
    let first: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            receive_lingering(
                id.clone(),
                i == 1,
                on_a.clone(),
                per_client,
                Duration::from_secs(1),
            )
        })
        .collect();
    let producer = env.produce(&ids, per_client, Duration::from_millis(30));
    let mut firsts: Vec<_> = first.into_iter().map(|r| r.join().unwrap()).collect();
    let on_b = nodes(vec![b.addr()]);
    let takeover = Instant::now();
    let second: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| receive(id.clone(), i == 1, on_b.clone(), per_client, LIMIT))
        .collect();
    // What A wrote after the reader paused counts too, up to the takeover line.
    for record in &mut firsts {
        assert!(record.open.is_some() && !record.complete, "{record:?}");
        assert_eq!(
            record.drain(),
            "BYE: session taken over by a newer connection"
        );
    }
    producer.join().unwrap();
    for (i, (mut record, next)) in firsts.into_iter().zip(second).enumerate() {
        record.merge(next.join().unwrap());
        if i == 0 {
            check(&record, per_client, &Copies::None);
        } else {
            check(&record, per_client, &Copies::Unacked(vec![takeover]));
        }
    }
}

#[test]
fn one_id_connecting_on_two_nodes_at_once_leaves_one_session() {
    let env = Env::new("ft_twice");
    let a = env.node("a", &[]);
    let b = env.node("b", &[]);
    let id = a.register(1).remove(0);
    let (mut x, mut y) = (a.connect(), b.connect());
    std::thread::scope(|s| {
        s.spawn(|| x.send(&id));
        s.spawn(|| y.send(&id));
    });
    x.expect(&format!("SET_CLIENT_ID: {id}"));
    y.expect(&format!("SET_CLIENT_ID: {id}"));
    // Exactly one of them is told it was taken over.
    let (winner, loser) = match x.try_line(Duration::from_secs(3)) {
        Ok(Some(line)) => {
            assert_eq!(line, "BYE: session taken over by a newer connection");
            (y, x)
        }
        _ => {
            y.expect("BYE: session taken over by a newer connection");
            (x, y)
        }
    };
    let mut winner = winner;
    let mut loser = loser;
    loser.expect_closed();
    env.enqueue(&id, "only once");
    assert_eq!(winner.messages(1), vec!["only once"]);
    winner.expect_silence(Duration::from_millis(300));
}

#[test]
fn a_stalled_reader_with_10000_queued_costs_bounded_memory() {
    let env = Env::new("ft_stalled");
    let a = env.node("a", &["--write-timeout", "5"]);
    let ids = a.register(2);
    let (stalled, healthy) = (&ids[0], &ids[1]);
    let before = a.rss_kib();
    // 10,000 messages of 1 KiB: 10 MiB queued for a client that never reads.
    let hex = stalled.replace('-', "");
    let body = "q".repeat(1024);
    env.query(&format!(
        "INSERT INTO messages (client_id, seq, body) SELECT X'{hex}', seq, '{body}' FROM seq_1_to_10000"
    ));
    env.query(&format!(
        "UPDATE clients SET last_seq = 10000 WHERE id = X'{hex}'"
    ));
    let mut s = a.connect();
    s.resume(stalled);
    let _socket = s.into_stream();
    let mut h = a.connect();
    h.resume(healthy);
    let mut peak = before;
    for i in 0..10 {
        env.enqueue(healthy, &format!("h{i}"));
        assert_eq!(h.messages(1), vec![format!("h{i}")]);
        peak = peak.max(a.rss_kib());
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "node RSS: {before} KiB before, {peak} KiB peak with a stalled reader and 10 MiB queued"
    );
    // One page (100 x 1 KiB) plus socket buffers, not the 10 MiB backlog.
    assert!(
        peak < before + 8 * 1024,
        "RSS grew from {before} to {peak} KiB"
    );
    let delivered = env.count(&format!(
        "SELECT delivered_seq FROM cursors WHERE client_id = X'{hex}'"
    ));
    assert!(delivered < 10_000, "delivered_seq {delivered}");
}

#[test]
fn rolling_restart_of_3_nodes_under_load_loses_and_repeats_nothing() {
    let env = Env::new("ft_rolling");
    let mut cluster: Vec<_> = ["a", "b", "c"].iter().map(|n| env.node(n, &[])).collect();
    let ids = cluster[0].register(30);
    let per_client = 40;
    let addrs = nodes(cluster.iter().map(|n| n.addr()).collect());
    let receivers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| receive(id.clone(), i % 3 == 0, addrs.clone(), per_client, LIMIT))
        .collect();
    let producer = env.produce(&ids, per_client, Duration::from_millis(50));
    let mut restarts = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        std::thread::sleep(Duration::from_millis(500));
        let old = cluster[i].addr();
        addrs.lock().unwrap().retain(|a| *a != old);
        restarts.push(Instant::now());
        // SIGTERM during delivery: goodbye lines, cursors recorded, exit 0.
        let status = cluster[i].terminate();
        assert_eq!(status.code(), Some(0), "{}", cluster[i].log());
        cluster[i] = env.node(name, &[]);
        addrs.lock().unwrap().push(cluster[i].addr());
    }
    producer.join().unwrap();
    for r in receivers {
        let record = r.join().unwrap();
        // Graceful: plain sessions get nothing twice; acknowledged ones only what was unacknowledged.
        if record.acked_at.is_empty() {
            check(&record, per_client, &Copies::None);
        } else {
            check(&record, per_client, &Copies::Unacked(restarts.clone()));
        }
    }
}

#[test]
fn eight_concurrent_producers_for_one_client_keep_commit_order() {
    let env = Env::new("ft_eight");
    let a = env.node("a", &[]);
    let id = a.register(1).remove(0);
    let mut c = a.connect();
    c.resume(&id);
    std::thread::scope(|s| {
        for p in 0..8 {
            let (env, id) = (&env, &id);
            s.spawn(move || {
                for n in 0..25 {
                    env.enqueue(id, &format!("p{p}-{n}"));
                }
            });
        }
    });
    let got = c.messages(200);
    let committed: Vec<String> = env
        .query("SELECT body FROM messages ORDER BY seq")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(got, committed, "delivery order is not commit order");
    for p in 0..8 {
        let mine: Vec<&String> = got
            .iter()
            .filter(|m| m.starts_with(&format!("p{p}-")))
            .collect();
        let want: Vec<String> = (0..25).map(|n| format!("p{p}-{n}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>(), "producer {p}");
    }
    c.expect_silence(Duration::from_millis(300));
}
