//! Redis, the fast path: which node holds which client (leased keys) and notifications to one node's channel.
//!
//! Keys and channels:
//! - `chat:owner:{<client_id>}` = `<node_id>|<epoch>`, with a TTL (the lease), renewed while the
//!   session lives and deleted when it ends (only by the session that wrote it).
//! - `chat:alive:<node_id>`: present while the node lives (a heartbeat with a short TTL).
//! - `chat:node:<node_id>`: the channel a node subscribes to. Payloads ([`Note`]) are
//!   `wake <client_id> [<client_id>...]` (new messages are committed for those clients),
//!   `kick <client_id> <epoch>` (a newer session with that epoch took the client over) and `post`
//!   (a message in a private room, addressed to one client).
//! - `chat:room:{<room>}`: a group room's channel; the nodes with a member of the room listen to
//!   it. Payload: `post` with the committed message (see [`notes`]).
//! - `chat:bans`: a channel every node subscribes to; a message (any payload) means "the bans
//!   table in MySQL changed: load it now".
//!
//! Nothing here is trusted for correctness: a lost key or notification delays a message until the
//! node's sweep or the client's next connect; MySQL decides who owns a client.

use std::collections::HashMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

mod notes;

pub use notes::{Carried, Note, Post, WAKE_CHUNK};

use crate::{ClientId, RoomId};

/// Bound on one Redis round trip.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on opening a Redis connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Renews the lease if the key is ours or gone (a Redis restart loses keys; the session is still ours
/// as far as this node knows, and MySQL fences it if not).
const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

/// Sets the lease unless it names a newer session (a higher epoch); returns the previous value.
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  local e = tonumber(string.match(v, '|(%d+)$'))
  if e and e > tonumber(ARGV[2]) then
    return v
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return v";

/// Publishes ARGV[1] on the channel of the node the lease KEYS[1] names, if any; returns how many
/// subscribers got it (one round trip for "who holds this client, tell it").
const TELL_HOLDER: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  return 0
end
local node = string.match(v, '^(.*)|%d+$')
if not node then
  return 0
end
return redis.call('PUBLISH', 'chat:node:' .. node, ARGV[1])";

/// Deletes the key only if it still names this session.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// A Redis failure.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// The owner of a client as the lease key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    pub epoch: u64,
}

impl Owner {
    fn encode(&self) -> String {
        format!("{}|{}", self.node, self.epoch)
    }

    fn decode(value: &str) -> Option<Owner> {
        let (node, epoch) = value.rsplit_once('|')?;
        Some(Owner {
            node: node.to_string(),
            epoch: epoch.parse().ok()?,
        })
    }
}

fn alive_key(node: &str) -> String {
    format!("chat:alive:{node}")
}

fn owner_key(id: ClientId) -> String {
    // The hash tag keeps one client's keys in one slot under Redis Cluster.
    format!("chat:owner:{{{id}}}")
}

/// The channel node `node` listens on.
pub fn node_channel(node: &str) -> String {
    format!("chat:node:{node}")
}

/// The channel of a group room; the hash tag keeps it in one slot (sharded pub/sub ready).
pub fn room_channel(room: RoomId) -> String {
    format!("chat:room:{{{}}}", room.simple())
}

/// The room a room channel is for.
fn channel_room(channel: &str) -> Option<RoomId> {
    RoomId::parse_simple(channel.strip_prefix("chat:room:{")?.strip_suffix('}')?)
}

/// Where a notification came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// This node's channel.
    Node,
    /// A group room's channel.
    Room(RoomId),
}

/// The channel that tells every node to reload the cluster-wide bans from MySQL.
pub const BANS_CHANNEL: &str = "chat:bans";

/// Most heartbeat keys `alive_nodes` collects (and SCAN rounds it makes, at 100 keys a round).
const MAX_NODES: usize = 10_000;

/// A Redis connection that reconnects by itself, plus the scripts that run on it.
#[derive(Clone)]
pub struct Bus {
    client: redis::Client,
    conn: ConnectionManager,
    claim: Script,
    renew: Script,
    release: Script,
    tell_holder: Script,
}

impl Bus {
    /// Connects to `url`; fails if Redis does not answer.
    pub async fn connect(url: &str) -> Result<Bus, BusError> {
        Bus::connect_with_retries(url, 2).await
    }

    /// Like `connect`, with `retries` reconnection attempts per failed command (0 for a one-shot
    /// command-line tool, which should not wait for a Redis that is down).
    pub async fn connect_with_retries(url: &str, retries: usize) -> Result<Bus, BusError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(retries)
            .set_max_delay(Duration::from_secs(1));
        let conn = timed(
            CONNECT_TIMEOUT * 2,
            client.get_connection_manager_with_config(config),
        )
        .await?;
        Ok(Bus {
            client,
            conn,
            claim: Script::new(CLAIM),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            tell_holder: Script::new(TELL_HOLDER),
        })
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        timed(
            RESPONSE_TIMEOUT,
            redis::cmd("PING").query_async::<()>(&mut conn),
        )
        .await
    }

    /// Records that `owner` holds `id` for `lease`, unless a newer session (higher epoch) already
    /// did; returns the owner that was recorded before, if any.
    pub async fn claim(
        &self,
        id: ClientId,
        owner: &Owner,
        lease: Duration,
    ) -> Result<Option<Owner>, BusError> {
        let mut conn = self.conn.clone();
        let previous: Option<String> = timed(
            RESPONSE_TIMEOUT,
            self.claim
                .key(owner_key(id))
                .arg(owner.encode())
                .arg(owner.epoch)
                .arg(lease.as_millis() as u64)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(previous.as_deref().and_then(Owner::decode))
    }

    /// [`Bus::claim`] for many sessions in one pipelined round trip: per session, in order, the
    /// previous owner.
    pub async fn claim_many(
        &self,
        sessions: &[(ClientId, Owner)],
        lease: Duration,
    ) -> Result<Vec<Option<Owner>>, BusError> {
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, owner) in sessions {
            pipe.invoke_script(
                self.claim
                    .key(owner_key(*id))
                    .arg(owner.encode())
                    .arg(owner.epoch)
                    .arg(lease.as_millis() as u64),
            );
        }
        let mut conn = self.conn.clone();
        // Loads the script first so the pipelined EVALSHAs cannot fail with NOSCRIPT.
        timed(RESPONSE_TIMEOUT, self.claim.load_async(&mut conn)).await?;
        let previous: Vec<Option<String>> =
            timed(RESPONSE_TIMEOUT * 4, pipe.query_async(&mut conn)).await?;
        Ok(previous
            .iter()
            .map(|p| p.as_deref().and_then(Owner::decode))
            .collect())
    }

    /// Extends the leases of these sessions (one pipelined round trip).
    pub async fn renew(
        &self,
        sessions: &[(ClientId, Owner)],
        lease: Duration,
    ) -> Result<(), BusError> {
        if sessions.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (id, owner) in sessions {
            pipe.invoke_script(
                self.renew
                    .key(owner_key(*id))
                    .arg(owner.encode())
                    .arg(lease.as_millis() as u64),
            )
            .ignore();
        }
        let mut conn = self.conn.clone();
        // Loads the script first so the pipelined EVALSHAs cannot fail with NOSCRIPT.
        timed(RESPONSE_TIMEOUT, self.renew.load_async(&mut conn)).await?;
        timed(RESPONSE_TIMEOUT * 4, pipe.query_async::<()>(&mut conn)).await
    }

    /// Deletes the lease of this session, if it is still the one recorded.
    pub async fn release(&self, id: ClientId, owner: &Owner) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        timed(
            RESPONSE_TIMEOUT,
            self.release
                .key(owner_key(id))
                .arg(owner.encode())
                .invoke_async::<i64>(&mut conn),
        )
        .await
        .map(drop)
    }

    /// Says this node is alive for `ttl` (renewed by a heartbeat well before it runs out).
    pub async fn heartbeat(&self, node: &str, ttl: Duration) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        timed(
            RESPONSE_TIMEOUT,
            conn.set_options::<_, _, ()>(
                alive_key(node),
                1,
                redis::SetOptions::default()
                    .with_expiration(redis::SetExpiry::PX(ttl.as_millis() as u64)),
            ),
        )
        .await
    }

    /// The nodes whose heartbeat key exists, sorted (`SCAN`, never `KEYS`; at most 10,000).
    pub async fn alive_nodes(&self) -> Result<Vec<String>, BusError> {
        let mut conn = self.conn.clone();
        let prefix = alive_key("");
        let mut nodes = std::collections::BTreeSet::new();
        let mut cursor: u64 = 0;
        for _ in 0..MAX_NODES {
            let (next, keys): (u64, Vec<String>) = timed(
                RESPONSE_TIMEOUT,
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{prefix}*"))
                    .arg("COUNT")
                    .arg(100)
                    .query_async(&mut conn),
            )
            .await?;
            nodes.extend(
                keys.iter()
                    .filter_map(|k| k.strip_prefix(&prefix))
                    .map(String::from),
            );
            cursor = next;
            if cursor == 0 || nodes.len() >= MAX_NODES {
                break;
            }
        }
        Ok(nodes.into_iter().collect())
    }

    /// Tells every node to reload the cluster-wide bans; returns how many nodes listened.
    pub async fn bans_changed(&self) -> Result<u64, BusError> {
        let mut conn = self.conn.clone();
        timed(RESPONSE_TIMEOUT, conn.publish(BANS_CHANNEL, "reload")).await
    }

    /// Subscribes to [`BANS_CHANNEL`]; one item per broadcast; the stream ends when the
    /// subscription's connection drops.
    pub async fn subscribe_bans(&self) -> Result<impl Stream<Item = ()>, BusError> {
        let mut pubsub = timed(CONNECT_TIMEOUT, self.client.get_async_pubsub()).await?;
        timed(RESPONSE_TIMEOUT, pubsub.subscribe(BANS_CHANNEL)).await?;
        Ok(pubsub.into_on_message().map(drop))
    }

    /// Who holds `id` now, according to its lease.
    pub async fn owner(&self, id: ClientId) -> Result<Option<Owner>, BusError> {
        let mut conn = self.conn.clone();
        let value: Option<String> = timed(RESPONSE_TIMEOUT, conn.get(owner_key(id))).await?;
        Ok(value.as_deref().and_then(Owner::decode))
    }

    /// Sends `note` to node `node`; returns how many subscribers got it.
    pub async fn send(&self, node: &str, note: Note) -> Result<u64, BusError> {
        let mut conn = self.conn.clone();
        timed(
            RESPONSE_TIMEOUT,
            conn.publish(node_channel(node), note.encode()),
        )
        .await
    }

    /// Tells the node holding `id` (if any) that messages were committed for it.
    /// Returns whether some node received it. Call only after the commit.
    pub async fn notify(&self, id: ClientId) -> Result<bool, BusError> {
        match self.owner(id).await? {
            Some(owner) => Ok(self.send(&owner.node, Note::Wake(vec![id])).await? > 0),
            None => Ok(false),
        }
    }

    /// Sends a committed message to the node holding its client, if any, in one round trip (a
    /// script reads the lease and publishes). Returns whether a node got it. Call only after the
    /// commit.
    pub async fn carry(&self, message: Carried) -> Result<bool, BusError> {
        let mut conn = self.conn.clone();
        let key = owner_key(message.client);
        let got: u64 = timed(
            RESPONSE_TIMEOUT,
            self.tell_holder
                .key(key)
                .arg(Note::Carry(vec![message]).encode())
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(got > 0)
    }

    /// The node holding each of `ids` that has a lease: one `MGET` per 1,000 ids.
    async fn holders(
        &self,
        conn: &mut ConnectionManager,
        ids: &[ClientId],
    ) -> Result<HashMap<ClientId, String>, BusError> {
        let mut nodes = HashMap::new();
        for chunk in ids.chunks(1000) {
            let keys: Vec<String> = chunk.iter().map(|id| owner_key(*id)).collect();
            let owners: Vec<Option<String>> = timed(
                RESPONSE_TIMEOUT,
                redis::cmd("MGET").arg(keys).query_async(conn),
            )
            .await?;
            for (id, owner) in chunk.iter().zip(owners) {
                if let Some(owner) = owner.as_deref().and_then(Owner::decode) {
                    nodes.insert(*id, owner.node);
                }
            }
        }
        Ok(nodes)
    }

    /// Sends committed messages to the nodes holding their clients: one `MGET` of the leases, then
    /// the messages for each node in one pipeline (a `PUBLISH` per 500 messages or 256 KiB).
    /// Returns how many clients had a holder. Call only after the commit.
    pub async fn carry_many(&self, messages: Vec<Carried>) -> Result<usize, BusError> {
        let mut by_node: HashMap<String, Vec<Carried>> = Default::default();
        let mut conn = self.conn.clone();
        let mut clients: Vec<ClientId> = messages.iter().map(|m| m.client).collect();
        clients.sort_unstable();
        clients.dedup();
        let nodes = self.holders(&mut conn, &clients).await?;
        for m in messages {
            if let Some(node) = nodes.get(&m.client) {
                by_node.entry(node.clone()).or_default().push(m);
            }
        }
        let carried = nodes.len();
        let mut pipe = redis::pipe();
        for (node, messages) in by_node {
            let mut batch: Vec<Carried> = Vec::new();
            let mut bytes = 0;
            for m in messages {
                bytes += m.body.len() + 80;
                batch.push(m);
                if batch.len() >= WAKE_CHUNK || bytes >= 256 * 1024 {
                    pipe.publish(
                        node_channel(&node),
                        Note::Carry(std::mem::take(&mut batch)).encode(),
                    )
                    .ignore();
                    bytes = 0;
                }
            }
            if !batch.is_empty() {
                pipe.publish(node_channel(&node), Note::Carry(batch).encode())
                    .ignore();
            }
        }
        if carried > 0 {
            timed(RESPONSE_TIMEOUT, pipe.query_async::<()>(&mut conn)).await?;
        }
        Ok(carried)
    }

    /// Tells the nodes holding these clients that messages were committed for them: one `MGET` of
    /// the leases, then one publish per node (per 500 clients). Returns how many clients had a
    /// holder. Call only after the commit.
    pub async fn notify_many(&self, ids: &[ClientId]) -> Result<usize, BusError> {
        let mut by_node: HashMap<String, Vec<ClientId>> = Default::default();
        let mut conn = self.conn.clone();
        let nodes = self.holders(&mut conn, ids).await?;
        for id in ids {
            if let Some(node) = nodes.get(id) {
                by_node.entry(node.clone()).or_default().push(*id);
            }
        }
        let held = by_node.values().map(Vec::len).sum();
        let mut pipe = redis::pipe();
        for (node, ids) in &by_node {
            for chunk in ids.chunks(WAKE_CHUNK) {
                pipe.publish(node_channel(node), Note::Wake(chunk.to_vec()).encode())
                    .ignore();
            }
        }
        if !by_node.is_empty() {
            timed(RESPONSE_TIMEOUT, pipe.query_async::<()>(&mut conn)).await?;
        }
        Ok(held)
    }

    /// Publishes a post on its room's channel (a group room: the nodes with members listen);
    /// returns how many nodes got it. Call only after the commit.
    pub async fn publish_room(&self, post: &Note, room: RoomId) -> Result<u64, BusError> {
        let mut conn = self.conn.clone();
        timed(
            RESPONSE_TIMEOUT,
            conn.publish(room_channel(room), post.encode()),
        )
        .await
    }

    /// Sends a post addressed to `to` (a private room's member) to the node holding `to`, if any.
    /// Call only after the commit.
    pub async fn send_post(&self, to: ClientId, post: &Note) -> Result<bool, BusError> {
        match self.owner(to).await? {
            Some(owner) => {
                let mut conn = self.conn.clone();
                let got: u64 = timed(
                    RESPONSE_TIMEOUT,
                    conn.publish(node_channel(&owner.node), post.encode()),
                )
                .await?;
                Ok(got > 0)
            }
            None => Ok(false),
        }
    }

    /// Subscribes to `node`'s channel. Returns the handle that subscribes to room channels on the
    /// same connection, and the notifications of both; the stream ends when the connection drops.
    pub async fn subscribe(
        &self,
        node: &str,
    ) -> Result<(Listener, impl Stream<Item = (From, Option<Note>)>), BusError> {
        let pubsub = timed(CONNECT_TIMEOUT, self.client.get_async_pubsub()).await?;
        let (mut sink, stream) = pubsub.split();
        timed(RESPONSE_TIMEOUT, sink.subscribe(node_channel(node))).await?;
        let notes = stream.map(|msg| {
            let from = channel_room(msg.get_channel_name()).map_or(From::Node, From::Room);
            (from, Note::decode(msg.get_payload_bytes()))
        });
        Ok((Listener(sink), notes))
    }
}

/// Subscribes to and unsubscribes from room channels on a node's subscription connection.
pub struct Listener(redis::aio::PubSubSink);

impl Listener {
    /// Listens to these rooms' channels.
    pub async fn listen(&mut self, rooms: &[RoomId]) -> Result<(), BusError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let channels: Vec<String> = rooms.iter().map(|r| room_channel(*r)).collect();
        timed(RESPONSE_TIMEOUT, self.0.subscribe(channels)).await
    }

    /// Stops listening to these rooms' channels.
    pub async fn unlisten(&mut self, rooms: &[RoomId]) -> Result<(), BusError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let channels: Vec<String> = rooms.iter().map(|r| room_channel(*r)).collect();
        timed(RESPONSE_TIMEOUT, self.0.unsubscribe(channels)).await
    }
}

async fn timed<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, redis::RedisError>>,
) -> Result<T, BusError> {
    let result = match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(BusError::from),
        Err(_) => Err(BusError::Timeout(limit)),
    };
    crate::stats::redis(&result);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_round_trip() {
        let owner = Owner {
            node: "node-a".into(),
            epoch: 42,
        };
        assert_eq!(Owner::decode(&owner.encode()), Some(owner));
        assert_eq!(Owner::decode("garbage"), None);
    }
}
