//! A node killed while a room is busy: every member, reconnecting (acknowledged mode), has every room message once, in room order.

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use super::cluster;
use crate::support::chat::Chatter;
use crate::support::node::Env;
use crate::support::stream::{check, nodes, receive_parsed, Copies};

const LIMIT: Duration = Duration::from_secs(90);

/// The number of a producer's post to #storm: `#storm *: <n>`.
fn storm_number(text: &str) -> Option<u64> {
    text.strip_prefix("#storm *: ")?.parse().ok()
}

#[test]
fn kill_9_while_a_room_is_busy_loses_and_reorders_nothing() {
    let env = Env::new("ch_room_kill");
    let [mut a, b, c] = cluster(&env, &[]);
    // Nine members, three per node, all acknowledged; they start on their own node.
    let all = nodes(vec![a.addr(), b.addr(), c.addr()]);
    let mut ids = Vec::new();
    for i in 0..9 {
        let node = [&a, &b, &c][i % 3];
        let mut m = Chatter::new(node);
        if i == 0 {
            m.ok("CREATE #storm");
        } else {
            m.ok("JOIN #storm");
        }
        m.disconnect();
        ids.push((m.id, node.addr()));
    }
    let per_member = 200;
    let followers: Vec<_> = ids
        .iter()
        .map(|(id, home)| {
            // Home node first, then the others.
            let list = all.lock().unwrap().clone();
            let mut order = vec![*home];
            order.extend(list.into_iter().filter(|x| x != home));
            receive_parsed(
                id.clone(),
                true,
                nodes(order),
                per_member,
                LIMIT,
                storm_number,
            )
        })
        .collect();
    // A producer posts numbered messages to the room.
    let (db, redis) = (env.db_url.clone(), env.redis_url.clone());
    let producer = thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let store = chat::store::Store::new(&db, 2).unwrap();
            let bus = chat::bus::Bus::connect(&redis).await.ok();
            let enqueuer = chat::enqueue::Enqueuer::new(store, bus, 4096);
            for n in 0..per_member {
                let (_, _notified) = enqueuer
                    .post_to_room("storm", &n.to_string())
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    });
    thread::sleep(Duration::from_millis(700));
    a.kill();
    let crash = Instant::now();
    all.lock().unwrap().retain(|x| *x != a.addr());
    producer.join().unwrap();
    let mut repeats = HashMap::new();
    for f in followers {
        let record = f.join().unwrap();
        // Every post once (a copy only of what was not acknowledged, or acknowledged within the
        // two seconds before the crash: room cursors are recorded on a 1 s tick), each session in
        // room order.
        let recent = vec![crash, crash - Duration::from_secs(1)];
        check(&record, per_member, &Copies::Unacked(recent));
        repeats.insert(record.client.clone(), record.sessions.len());
    }
    // The members of the killed node did reconnect elsewhere.
    assert!(
        repeats.values().any(|sessions| *sessions >= 2),
        "{repeats:?}"
    );
}
