//! The library's batch enqueue: per-item results, ids and seqs as stored, delivery in order, across nodes.

use chat::bus::Bus;
use chat::enqueue::{EnqueueError, Enqueuer, InvalidMessage, DEFAULT_MAX_BYTES};
use chat::store::Store;
use chat::ClientId;

use crate::support::node::Env;

#[test]
fn a_batch_stores_every_valid_item_once_and_reports_the_others() {
    let env = Env::new("bt_batch");
    let a = env.node("a", &[]);
    let b = env.node("b", &[]);
    let mut on_a = a.connect();
    let id_a = on_a.register();
    let mut on_b = b.connect();
    let id_b = on_b.register();
    let offline = a.register(1).remove(0);
    let unknown = ClientId::random();
    let (ca, cb, cc): (ClientId, ClientId, ClientId) = (
        id_a.parse().unwrap(),
        id_b.parse().unwrap(),
        offline.parse().unwrap(),
    );
    let mut items: Vec<(ClientId, String)> = Vec::new();
    for n in 0..1500 {
        let who = [ca, cb, cc][n % 3];
        items.push((who, format!("m{n}")));
    }
    items.insert(10, (unknown, "nobody".into()));
    items.insert(20, (ca, "two\nlines".into()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (results, notified) = rt.block_on(async {
        let store = Store::new(&env.db_url, 2).unwrap();
        let bus = Bus::connect(&env.redis_url).await.unwrap();
        let enq = Enqueuer::new(store, Some(bus), DEFAULT_MAX_BYTES);
        let refs: Vec<(ClientId, &str)> = items.iter().map(|(c, t)| (*c, t.as_str())).collect();
        let out = enq.enqueue_batch(&refs).await.unwrap();
        enq.close().await;
        out
    });
    assert_eq!(results.len(), items.len());
    assert!(matches!(results[10], Err(EnqueueError::UnknownClient(id)) if id == unknown));
    assert!(matches!(
        results[20],
        Err(EnqueueError::Invalid(InvalidMessage::ControlCharacter))
    ));
    // Two clients online, on two nodes: both were notified.
    assert_eq!(notified.unwrap(), 2);
    // Every reported id and seq is the stored one.
    let stored: std::collections::HashMap<(String, u64), u64> = env
        .query("SELECT LOWER(HEX(client_id)), seq, id FROM messages")
        .into_iter()
        .map(|r| ((r[0].clone(), r[1].parse().unwrap()), r[2].parse().unwrap()))
        .collect();
    assert_eq!(stored.len(), 1500);
    let mut next_seq = std::collections::HashMap::new();
    for ((client, _), result) in items.iter().zip(&results) {
        let Ok(s) = result else { continue };
        let seq = next_seq.entry(*client).or_insert(0u64);
        *seq += 1;
        assert_eq!(s.seq, *seq, "seqs follow item order per client");
        let key = (client.to_string().replace('-', ""), s.seq);
        assert_eq!(stored.get(&key), Some(&s.id), "reported id of {key:?}");
    }
    // Delivery: in item order per client, live on both nodes, pending for the offline one.
    let want = |c: ClientId| -> Vec<String> {
        items
            .iter()
            .zip(&results)
            .filter(|((who, _), r)| *who == c && r.is_ok())
            .map(|((_, t), _)| t.clone())
            .collect()
    };
    assert_eq!(on_a.messages(500), want(ca));
    assert_eq!(on_b.messages(500), want(cb));
    let mut later = b.connect();
    later.resume(&offline);
    assert_eq!(later.messages(500), want(cc));
}

/// A statement that fails inside a one-round-trip transaction (the single enqueue, the claim) is
/// rolled back there: the transaction is not left open on the pooled connection, where the next
/// transaction's `START TRANSACTION` would commit it half done (a seq taken with no message).
#[test]
fn a_failed_enqueue_leaves_no_half_transaction_on_the_pooled_connection() {
    let env = Env::new("bt_script");
    let a = env.node("a", &[]);
    let id: ClientId = a.register(1).remove(0).parse().unwrap();
    // The insert of a message whose body is `boom` fails after its client row was updated.
    env.query("ALTER TABLE messages ADD CONSTRAINT no_boom CHECK (body <> 'boom')");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (refused, stored) = rt.block_on(async {
        // One connection: the next enqueue runs on the one the failure happened on.
        let store = Store::new(&env.db_url, 1).unwrap();
        let refused = store.enqueue(id, b"boom").await;
        let stored = store.enqueue(id, b"ok").await;
        store.close().await;
        (refused, stored)
    });
    assert!(
        refused.is_err(),
        "the refused insert is an error: {refused:?}"
    );
    let stored = stored.unwrap().expect("the client exists");
    assert_eq!(stored.seq, 1, "the failed enqueue took no seq");
    let hex = id.to_string().replace('-', "");
    assert_eq!(
        env.count(&format!(
            "SELECT last_seq FROM clients WHERE id = UNHEX('{hex}')"
        )),
        1
    );
    assert_eq!(
        env.query(&format!(
            "SELECT seq, body FROM messages WHERE client_id = UNHEX('{hex}')"
        )),
        vec![vec!["1".to_string(), "ok".to_string()]]
    );
}

/// A producer moves the queue heads it committed last with one conditional update (once the
/// plan is known, the whole batch in one round trip, whose check stops it with a `SIGNAL`); a head
/// that another producer moved in between is found out, and that batch runs again with a read.
/// Either way every client's seqs stay contiguous, in item order, and as reported; counts that
/// differ per client (one arm each) move each head by its own count.
#[test]
fn heads_another_producer_moved_are_read_again_and_seqs_stay_contiguous() {
    // A MariaDB of its own: its count of SIGNALs is this test's alone.
    let env = Env::private("bt_heads");
    let signals = || {
        env.count("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'COM_SIGNAL'")
    };
    let signals_before = signals();
    let a = env.node("a", &[]);
    let ids: Vec<ClientId> = a.register(3).iter().map(|id| id.parse().unwrap()).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Items per round: client i gets i + round + 1 messages (the counts differ per client).
    let round = |r: usize| -> Vec<(ClientId, String)> {
        ids.iter()
            .enumerate()
            .flat_map(|(i, id)| (0..i + r + 1).map(move |k| (*id, format!("r{r}c{i}m{k}"))))
            .collect()
    };
    let mut sent: Vec<(ClientId, String, u64, u64)> = Vec::new();
    rt.block_on(async {
        let store = Store::new(&env.db_url, 2).unwrap();
        let mine = Enqueuer::new(store, None, DEFAULT_MAX_BYTES);
        let other = Store::new(&env.db_url, 1).unwrap();
        for r in 0..4 {
            if r == 2 {
                // Another producer writes to the second client: this producer's head of it is stale.
                let s = other.enqueue(ids[1], b"other").await.unwrap().unwrap();
                sent.push((ids[1], "other".into(), s.seq, s.id));
            }
            let items = round(r);
            let refs: Vec<(ClientId, &str)> = items.iter().map(|(c, t)| (*c, t.as_str())).collect();
            let (results, _) = mine.enqueue_batch(&refs).await.unwrap();
            for ((client, text), result) in items.iter().zip(results) {
                let s = result.unwrap();
                sent.push((*client, text.clone(), s.seq, s.id));
            }
        }
        mine.close().await;
        other.close().await;
    });
    assert_stored_as_reported(&env, &ids, &sent);
    // Round 1 learns the plan, round 2 finds the stale head by the check (and runs again with a
    // read), round 3 goes in one round trip: one SIGNAL in all.
    assert_eq!(
        signals() - signals_before,
        1,
        "the stale head was not caught (once) by the one-round-trip batch's check"
    );
}

/// Calls that overlap on one enqueuer (single messages and batches, from many tasks) share
/// transactions, and each still gets exactly its own results: every message stored once, as
/// reported, seqs contiguous per client. Calls that come as a shared transaction ends start the
/// next one (none is left waiting or failed by the hand-over).
#[test]
fn overlapping_calls_on_one_enqueuer_each_get_their_own_results() {
    let env = Env::new("bt_merge");
    let a = env.node("a", &[]);
    let ids: Vec<ClientId> = a.register(4).iter().map(|id| id.parse().unwrap()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sent: Vec<(ClientId, String, u64, u64)> = rt.block_on(async {
        let store = Store::new(&env.db_url, 4).unwrap();
        let enq = std::sync::Arc::new(Enqueuer::new(store, None, DEFAULT_MAX_BYTES));
        let mut tasks = Vec::new();
        for k in 0..400usize {
            let (enq, ids) = (enq.clone(), ids.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_micros((k % 7) as u64 * 300)).await;
                let mut out = Vec::new();
                if k % 10 == 0 {
                    let items: Vec<(ClientId, String)> = (0..5)
                        .map(|j| (ids[(k + j) % 4], format!("b{k}.{j}")))
                        .collect();
                    let refs: Vec<(ClientId, &str)> =
                        items.iter().map(|(c, t)| (*c, t.as_str())).collect();
                    let (results, _) = enq.enqueue_batch(&refs).await.unwrap();
                    for ((c, t), r) in items.iter().zip(results) {
                        let s = r.unwrap();
                        out.push((*c, t.clone(), s.seq, s.id));
                    }
                } else {
                    let (c, t) = (ids[k % 4], format!("s{k}"));
                    let e = enq.enqueue(c, &t).await.unwrap();
                    out.push((c, t, e.seq, e.message_id));
                }
                out
            }));
        }
        let mut sent = Vec::new();
        for t in tasks {
            sent.extend(t.await.unwrap());
        }
        sent
    });
    assert_eq!(sent.len(), 360 + 40 * 5);
    assert_stored_as_reported(&env, &ids, &sent);
}

/// Each client's stored messages are exactly the reported (client, body, seq, id), with seqs
/// 1..=n without gaps and the client's head at n.
fn assert_stored_as_reported(env: &Env, ids: &[ClientId], sent: &[(ClientId, String, u64, u64)]) {
    for (i, id) in ids.iter().enumerate() {
        let hex = id.to_string().replace('-', "");
        let stored = env.query(&format!(
            "SELECT seq, id, body FROM messages WHERE client_id = UNHEX('{hex}') ORDER BY seq"
        ));
        let mut reported: Vec<(u64, Vec<String>)> = sent
            .iter()
            .filter(|(c, ..)| c == id)
            .map(|(_, text, seq, mid)| (*seq, vec![seq.to_string(), mid.to_string(), text.clone()]))
            .collect();
        reported.sort_by_key(|r| r.0);
        let reported: Vec<Vec<String>> = reported.into_iter().map(|r| r.1).collect();
        assert_eq!(
            stored, reported,
            "client {i}: stored rows are the reported ones"
        );
        let seqs: Vec<u64> = stored.iter().map(|r| r[0].parse().unwrap()).collect();
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, want, "client {i}: seqs without gaps");
        assert_eq!(
            env.count(&format!(
                "SELECT last_seq FROM clients WHERE id = UNHEX('{hex}')"
            )),
            seqs.len() as u64,
            "client {i}: the head is the last seq"
        );
    }
}
