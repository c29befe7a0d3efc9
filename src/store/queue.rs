//! The enqueue side of the store: appending messages to client queues, one or many per transaction.

use std::collections::HashMap;

use mysql_async::prelude::*;
use mysql_async::TxOpts;

use super::{case_arms, hex, hex_list, Store, StoreError, Stored};
use crate::ClientId;

impl Store {
    /// The auto-increment step when one multi-row INSERT gets consecutive ids, else 0. Asked in
    /// every batch transaction: a failover may bring a server with other settings.
    async fn id_step(tx: &mut mysql_async::Transaction<'_>) -> Result<u64, mysql_async::Error> {
        let row: Option<(u64, u64)> = tx
            .query_first("SELECT @@innodb_autoinc_lock_mode, @@auto_increment_increment")
            .await?;
        Ok(match row {
            Some((mode, step)) if mode <= 1 => step,
            _ => 0,
        })
    }

    /// Appends `body` to the client's queue in one transaction. `None` when the client does not exist.
    pub async fn enqueue(&self, id: ClientId, body: &[u8]) -> Result<Option<Stored>, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            // Takes the client row lock: concurrent enqueues for one client get seqs in commit order.
            tx.exec_drop(
                "UPDATE clients SET last_seq = LAST_INSERT_ID(last_seq + 1) WHERE id = ?",
                (&id.as_bytes()[..],),
            )
            .await?;
            if tx.affected_rows() == 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            let seq = tx.last_insert_id().unwrap_or_default();
            tx.exec_drop(
                "INSERT INTO messages (client_id, seq, body) VALUES (?, ?, ?)",
                (&id.as_bytes()[..], seq, body),
            )
            .await?;
            let message_id = tx.last_insert_id().unwrap_or_default();
            tx.commit().await?;
            Ok(Some(Stored {
                id: message_id,
                seq,
            }))
        })
        .await
    }

    /// Appends many messages, for many clients, in one transaction: one `UPDATE` of the client rows,
    /// one multi-row `INSERT` per 1,000 messages. The result has one entry per item, in order;
    /// `None` for an item whose client does not exist (nothing is stored for it).
    pub async fn enqueue_batch(
        &self,
        items: &[(ClientId, &[u8])],
    ) -> Result<Vec<Option<Stored>>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut counts: HashMap<ClientId, u64> = HashMap::new();
        for (id, _) in items {
            *counts.entry(*id).or_default() += 1;
        }
        let ids: Vec<ClientId> = counts.keys().copied().collect();
        let list = hex_list(&ids);
        let cases = case_arms(counts.iter().map(|(id, n)| (&id.as_bytes()[..], *n)));
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            // Row locks on every client of the batch, taken in one statement: seqs are in commit order.
            tx.query_drop(format!(
                "UPDATE clients SET last_seq = last_seq + CASE id{cases} END WHERE id IN ({list})"
            ))
            .await?;
            let rows: Vec<(Vec<u8>, u64)> = tx
                .query(format!(
                    "SELECT id, last_seq FROM clients WHERE id IN ({list})"
                ))
                .await?;
            // Next seq to hand out per client: its new last_seq minus what this batch takes, plus one.
            let mut next: HashMap<ClientId, u64> = rows
                .into_iter()
                .filter_map(|(id, last)| {
                    let id = ClientId::from_slice(&id)?;
                    Some((id, last + 1 - counts[&id]))
                })
                .collect();
            let planned: Vec<Option<u64>> = items
                .iter()
                .map(|(id, _)| {
                    next.get_mut(id).map(|seq| {
                        *seq += 1;
                        *seq - 1
                    })
                })
                .collect();
            let rows: Vec<(ClientId, u64, &[u8])> = items
                .iter()
                .zip(&planned)
                .filter_map(|((id, body), seq)| Some((*id, (*seq)?, *body)))
                .collect();
            // Ids of a multi-row INSERT are consecutive (by the auto-increment step) when
            // innodb_autoinc_lock_mode <= 1 (MariaDB's default); otherwise they are read back.
            let step = Store::id_step(&mut tx).await?;
            let mut ids_by_key: HashMap<(ClientId, u64), u64> = HashMap::with_capacity(rows.len());
            for chunk in rows.chunks(1000) {
                let placeholders = vec!["(?, ?, ?)"; chunk.len()].join(", ");
                let params: Vec<mysql_async::Value> = chunk
                    .iter()
                    .flat_map(|(id, seq, body)| {
                        [
                            id.as_bytes().to_vec().into(),
                            (*seq).into(),
                            body.to_vec().into(),
                        ]
                    })
                    .collect();
                tx.exec_drop(
                    format!("INSERT INTO messages (client_id, seq, body) VALUES {placeholders}"),
                    params,
                )
                .await?;
                if step > 0 {
                    let first = tx.last_insert_id().unwrap_or_default();
                    for (i, (id, seq, _)) in chunk.iter().enumerate() {
                        ids_by_key.insert((*id, *seq), first + i as u64 * step);
                    }
                    continue;
                }
                let keys = chunk
                    .iter()
                    .map(|(id, seq, _)| format!("(X'{}', {seq})", hex(id.as_bytes())))
                    .collect::<Vec<_>>()
                    .join(", ");
                let found: Vec<(Vec<u8>, u64, u64)> = tx
                    .query(format!(
                        "SELECT client_id, seq, id FROM messages WHERE (client_id, seq) IN ({keys})"
                    ))
                    .await?;
                for (client, seq, id) in found {
                    if let Some(client) = ClientId::from_slice(&client) {
                        ids_by_key.insert((client, seq), id);
                    }
                }
            }
            tx.commit().await?;
            Ok(items
                .iter()
                .zip(planned)
                .map(|((client, _), seq)| {
                    let seq = seq?;
                    Some(Stored {
                        id: ids_by_key.get(&(*client, seq)).copied().unwrap_or_default(),
                        seq,
                    })
                })
                .collect())
        })
        .await
    }
}
