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
