//! The producer's view of stored messages: each one's state and timestamps, read from MySQL.

use std::time::{Duration, SystemTime};

use mysql_async::prelude::*;

use super::{Store, StoreError};
use crate::ClientId;

/// How many ids one status query reads.
const STATUS_CHUNK: usize = 500;
/// A message past its deadline by this much, with no delivery recorded, is reported expired
/// before any node marked it: more than a node needs to record a delivery made just in time.
const EXPIRY_GRACE_SECS: u64 = 2;

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// Stored, not delivered yet.
    Queued,
    /// Written to a plain session.
    Delivered,
    /// Acknowledged by an acknowledged-mode session.
    Acknowledged,
    /// Its time ran out before delivery: it will never be delivered.
    Expired,
    /// A newer message with its collapse key replaced it before delivery.
    Replaced,
    /// An operator dropped it undelivered (`chat-admin purge --pending`).
    Purged,
    /// In a room's log (`chat-enqueue --room`, `SAY`, `SEND`): every member gets it from its own
    /// cursor; there is no one delivery to report.
    Posted,
}

impl MessageState {
    /// The word `chat-enqueue status` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Delivered => "delivered",
            MessageState::Acknowledged => "acknowledged",
            MessageState::Expired => "expired",
            MessageState::Replaced => "replaced",
            MessageState::Purged => "purged",
            MessageState::Posted => "posted",
        }
    }

    /// Whether the state can still change (only a queued message moves on).
    pub fn is_final(self) -> bool {
        self != MessageState::Queued
    }
}

/// One message's state and the times it reached each step.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageStatus {
    pub id: u64,
    pub client_id: ClientId,
    pub seq: u64,
    pub state: MessageState,
    pub queued_at: SystemTime,
    /// When it expires, if it has a TTL.
    pub expires_at: Option<SystemTime>,
    /// Written to a plain session.
    pub delivered_at: Option<SystemTime>,
    /// Acknowledged (acknowledged mode).
    pub acknowledged_at: Option<SystemTime>,
    /// When it expired: when a node skipped it, or its deadline if no node has looked since.
    pub expired_at: Option<SystemTime>,
    pub replaced_at: Option<SystemTime>,
    /// When an operator dropped it undelivered.
    pub purged_at: Option<SystemTime>,
    /// The message that replaced it.
    pub replaced_by: Option<u64>,
}

/// id, client, seq, queued, expires, expired by now, dropped, dropped at, replaced by, delivered
/// seq, the first delivery-log move that covers it as "acked at".
type StatusRow = (
    u64,
    Vec<u8>,
    u64,
    String,
    Option<String>,
    Option<bool>,
    u8,
    Option<String>,
    Option<u64>,
    Option<u64>,
    Option<String>,
);

impl Store {
    /// The status of each given message that exists (unknown or purged ids are left out).
    pub async fn message_status(&self, ids: &[u64]) -> Result<Vec<MessageStatus>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(STATUS_CHUNK) {
            let list = chunk
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let sql = format!(
                "SELECT m.id, m.client_id, m.seq, UNIX_TIMESTAMP(m.enqueued_at), \
                 UNIX_TIMESTAMP(m.expires_at), \
                 m.expires_at <= NOW(6) - INTERVAL {EXPIRY_GRACE_SECS} SECOND, m.dropped, \
                 UNIX_TIMESTAMP(m.dropped_at), m.replaced_by, d.delivered_seq, \
                 (SELECT CONCAT(l.acked, ' ', UNIX_TIMESTAMP(l.at)) FROM deliveries l \
                  WHERE l.client_id = m.client_id AND l.upto_seq >= m.seq \
                  ORDER BY l.upto_seq LIMIT 1) \
                 FROM messages m LEFT JOIN cursors d ON d.client_id = m.client_id \
                 WHERE m.id IN ({list})"
            );
            let rows: Vec<StatusRow> = self
                .timed(async {
                    let mut conn = self.pool.get_conn().await?;
                    conn.query(sql).await
                })
                .await?;
            out.extend(rows.into_iter().filter_map(status));
        }
        Ok(out)
    }
}

fn status(row: StatusRow) -> Option<MessageStatus> {
    let (
        id,
        client,
        seq,
        queued,
        expires,
        expired_now,
        dropped,
        dropped_at,
        replaced_by,
        done,
        log,
    ) = row;
    let dropped_at = dropped_at.as_deref().and_then(unix_time);
    let expires_at = expires.as_deref().and_then(unix_time);
    let (log_acked, log_at) = match log.as_deref().and_then(|l| l.split_once(' ')) {
        Some((acked, at)) => (acked == "1", unix_time(at)),
        None => (false, None),
    };
    // No cursor: the queue is a room's log, not a client's.
    let Some(done) = done else {
        return Some(MessageStatus {
            id,
            client_id: ClientId::from_slice(&client)?,
            seq,
            state: MessageState::Posted,
            queued_at: unix_time(&queued)?,
            expires_at: None,
            delivered_at: None,
            acknowledged_at: None,
            expired_at: None,
            replaced_at: None,
            purged_at: None,
            replaced_by: None,
        });
    };
    let mut s = MessageStatus {
        id,
        client_id: ClientId::from_slice(&client)?,
        seq,
        state: MessageState::Queued,
        queued_at: unix_time(&queued)?,
        expires_at,
        delivered_at: None,
        acknowledged_at: None,
        expired_at: None,
        replaced_at: None,
        purged_at: None,
        replaced_by,
    };
    match dropped {
        3 => {
            s.state = MessageState::Purged;
            s.purged_at = dropped_at;
        }
        2 => {
            s.state = MessageState::Replaced;
            s.replaced_at = dropped_at;
        }
        1 => {
            s.state = MessageState::Expired;
            s.expired_at = dropped_at;
        }
        _ if seq <= done && log_acked => {
            s.state = MessageState::Acknowledged;
            s.acknowledged_at = log_at;
        }
        _ if seq <= done => {
            s.state = MessageState::Delivered;
            s.delivered_at = log_at;
        }
        // Past its deadline (and the grace) and not delivered: no node will deliver it any more.
        _ if expired_now == Some(true) => {
            s.state = MessageState::Expired;
            s.expired_at = expires_at;
        }
        _ => {}
    }
    Some(s)
}

/// `UNIX_TIMESTAMP()` text (seconds with a fraction) as a time.
fn unix_time(text: &str) -> Option<SystemTime> {
    let secs: f64 = text.trim().parse().ok()?;
    (secs >= 0.0).then(|| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_timestamps_parse_with_their_fraction() {
        let t = unix_time("1700000000.250000").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            Duration::from_millis(1_700_000_000_250)
        );
        assert_eq!(unix_time("x"), None);
    }
}
