//! What chat-enqueue prints about stored messages (text or JSON) and the exit status each state maps to.

use std::time::SystemTime;

use chat::enqueue::MessageState;
use chat::store::MessageStatus;

/// Exit status: stored; with `--wait`, delivered to a plain session.
pub const EXIT_OK: u8 = 0;
/// Exit status: the message could not be stored (MySQL unreachable or failing).
pub const EXIT_STORE: u8 = 1;
/// Exit status: bad arguments or invalid text; nothing stored.
pub const EXIT_INVALID: u8 = 2;
/// Exit status: no client has this id (nothing stored), or `status` of an unknown message id.
pub const EXIT_UNKNOWN: u8 = 3;
/// Exit status with `--wait`: acknowledged by an acknowledged-mode session.
pub const EXIT_ACKNOWLEDGED: u8 = 4;
/// Exit status with `--wait`: still queued when the time ran out.
pub const EXIT_PENDING: u8 = 5;
/// Exit status with `--wait`: expired (its TTL ran out before delivery).
pub const EXIT_EXPIRED: u8 = 6;
/// Exit status with `--wait`: replaced by a newer message with its collapse key.
pub const EXIT_REPLACED: u8 = 7;
/// Exit status with `--wait`: dropped undelivered by an operator (`chat-admin purge --pending`).
pub const EXIT_PURGED: u8 = 8;

/// The exit status for messages waited on: the least advanced one decides (queued, then expired,
/// replaced, purged, delivered, acknowledged); a message that no longer exists counts as unknown.
pub fn wait_exit(ids: &[u64], statuses: &[MessageStatus]) -> u8 {
    if ids.iter().any(|id| !statuses.iter().any(|s| s.id == *id)) {
        return EXIT_UNKNOWN;
    }
    let rank = |state: MessageState| match state {
        MessageState::Queued => 0,
        MessageState::Expired => 1,
        MessageState::Replaced => 2,
        MessageState::Purged => 3,
        MessageState::Delivered => 4,
        MessageState::Acknowledged => 5,
        MessageState::Posted => 6,
    };
    match statuses.iter().map(|s| s.state).min_by_key(|s| rank(*s)) {
        Some(MessageState::Queued) => EXIT_PENDING,
        Some(MessageState::Expired) => EXIT_EXPIRED,
        Some(MessageState::Replaced) => EXIT_REPLACED,
        Some(MessageState::Purged) => EXIT_PURGED,
        Some(MessageState::Acknowledged) => EXIT_ACKNOWLEDGED,
        Some(MessageState::Delivered | MessageState::Posted) | None => EXIT_OK,
    }
}

/// One line per id, in the order asked: `<id> <state> client=<uuid> seq=<n> queued=<time> ...`
/// (only the times that exist), or `<id> unknown`.
pub fn text(ids: &[u64], statuses: &[MessageStatus]) -> String {
    let mut out = String::new();
    for id in ids {
        let Some(s) = statuses.iter().find(|s| s.id == *id) else {
            out.push_str(&format!("{id} unknown\n"));
            continue;
        };
        // A room post's queue is its room.
        let whose = if s.state == MessageState::Posted {
            "room"
        } else {
            "client"
        };
        out.push_str(&format!(
            "{} {} {whose}={} seq={} queued={}",
            s.id,
            s.state.as_str(),
            s.client_id,
            s.seq,
            time(s.queued_at)
        ));
        for (name, at) in [
            ("expires", s.expires_at),
            ("delivered", s.delivered_at),
            ("acknowledged", s.acknowledged_at),
            ("expired", s.expired_at),
            ("replaced", s.replaced_at),
            ("purged", s.purged_at),
        ] {
            if let Some(at) = at {
                out.push_str(&format!(" {name}={}", time(at)));
            }
        }
        if let Some(by) = s.replaced_by {
            out.push_str(&format!(" replaced_by={by}"));
        }
        out.push('\n');
    }
    out
}

/// A JSON array with one object per id, in the order asked; times are RFC 3339 UTC or null.
pub fn json(ids: &[u64], statuses: &[MessageStatus]) -> String {
    let items: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| match statuses.iter().find(|s| s.id == *id) {
            None => serde_json::json!({ "id": id, "state": "unknown" }),
            Some(s) => serde_json::json!({
                "id": s.id,
                "state": s.state.as_str(),
                "client_id": (s.state != MessageState::Posted).then(|| s.client_id.to_string()),
                "room_id": (s.state == MessageState::Posted).then(|| s.client_id.to_string()),
                "seq": s.seq,
                "queued_at": time(s.queued_at),
                "expires_at": s.expires_at.map(time),
                "delivered_at": s.delivered_at.map(time),
                "acknowledged_at": s.acknowledged_at.map(time),
                "expired_at": s.expired_at.map(time),
                "replaced_at": s.replaced_at.map(time),
                "purged_at": s.purged_at.map(time),
                "replaced_by": s.replaced_by,
            }),
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}
