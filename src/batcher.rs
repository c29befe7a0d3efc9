//! Group commit for MySQL work of many sessions: requests that wait together go out as one statement.
//!
//! A session sends its request and waits for the answer. The batcher takes every request that is
//! waiting (up to a bound), runs them as one operation, answers each, and starts over: the more
//! sessions work at once, the more each statement carries, with no timer and no added latency when
//! the node is quiet.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::bus::{Bus, Owner};
use crate::store::{
    Claim, Fetch, NewPost, PostRefused, PostedRow, RoomCursor, RoomFetch, Store, StoreError,
};
use crate::{ClientId, RoomId};

/// Requests that may wait (a session waits for its own answer, so this bounds memory).
const QUEUE: usize = 20_000;
/// Longest wait for an answer: the batch in flight and ours, each bounded by the query timeout.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(25);

/// One kind of batched operation.
pub trait BatchOp: Send + Sync + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;
    /// Most items in one operation.
    const MAX: usize;
    /// What the operation is, for the log.
    const NAME: &'static str;
    /// The client an item is about: one item per client per operation.
    fn client(item: &Self::Item) -> ClientId;
    /// Runs the items as one operation; one output per item, in order.
    fn run(
        &self,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = Result<Vec<Self::Output>, StoreError>> + Send;
}

struct Request<Op: BatchOp> {
    item: Op::Item,
    reply: oneshot::Sender<Result<Op::Output, StoreError>>,
}

/// Handle to a batching task.
pub struct Batcher<Op: BatchOp> {
    tx: mpsc::Sender<Request<Op>>,
}

impl<Op: BatchOp> Clone for Batcher<Op> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

impl<Op: BatchOp> Batcher<Op> {
    /// Starts the task; it ends when every handle is dropped.
    pub fn spawn(op: Op) -> Batcher<Op> {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(Arc::new(op), rx));
        Batcher { tx }
    }

    /// Runs `item` in the next batch and returns its output.
    pub async fn call(&self, item: Op::Item) -> Result<Op::Output, StoreError> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Request { item, reply }).await.is_err() {
            return Err(StoreError::BatcherGone);
        }
        // Queued behind a batch that is itself bounded by the query timeout: at most two of them.
        match tokio::time::timeout(CALL_TIMEOUT, answer).await {
            Ok(answer) => answer.unwrap_or(Err(StoreError::BatcherGone)),
            Err(_) => Err(StoreError::Timeout(CALL_TIMEOUT)),
        }
    }
}

async fn run<Op: BatchOp>(op: Arc<Op>, mut rx: mpsc::Receiver<Request<Op>>) {
    let mut waiting: Vec<Request<Op>> = Vec::new();
    loop {
        if waiting.is_empty() {
            match rx.recv().await {
                Some(request) => waiting.push(request),
                None => return,
            }
            // The first request after a lull rarely comes alone: the tasks a batch of another
            // stage has just answered are runnable now and send theirs as soon as they run. Let
            // them run first, so that they share this batch instead of waiting behind a batch of
            // one.
            tokio::task::yield_now().await;
        }
        while waiting.len() < Op::MAX * 2 {
            match rx.try_recv() {
                Ok(request) => waiting.push(request),
                Err(_) => break,
            }
        }
        // One item per client per operation; a second one (a takeover on this node) waits a turn.
        let mut seen = HashSet::new();
        let (batch, later): (Vec<Request<Op>>, Vec<Request<Op>>) = waiting
            .drain(..)
            .partition(|r| seen.len() < Op::MAX && seen.insert(Op::client(&r.item)));
        waiting = later;
        let (items, replies): (Vec<Op::Item>, Vec<_>) =
            batch.into_iter().map(|r| (r.item, r.reply)).unzip();
        let count = items.len();
        match op.run(items).await {
            Ok(outputs) => {
                for (reply, output) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(Ok(output));
                }
            }
            Err(e) => {
                warn!(error = %e, count, op = Op::NAME, "batched MySQL operation failed");
                let text = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Shared(text.clone())));
                }
            }
        }
    }
}

/// Reads of pending messages: (client, epoch, after_seq, limit) -> [`Fetch`].
pub struct Fetches(pub Store);

impl BatchOp for Fetches {
    type Item = (ClientId, u64, u64, usize);
    type Output = Fetch;
    const MAX: usize = 500;
    const NAME: &'static str = "fetch pending";

    fn client(item: &Self::Item) -> ClientId {
        item.0
    }

    fn run(
        &self,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = Result<Vec<Fetch>, StoreError>> + Send {
        let store = self.0.clone();
        async move { store.fetch_pending_many(&items).await }
    }
}

/// Cursor writes: (client, epoch, seq, acknowledged mode) -> recorded (false: the session lost the
/// delivery right).
pub struct Cursors(pub Store);

impl BatchOp for Cursors {
    type Item = (ClientId, u64, u64, bool);
    type Output = bool;
    const MAX: usize = 500;
    const NAME: &'static str = "record cursors";

    fn client(item: &Self::Item) -> ClientId {
        item.0
    }

    fn run(
        &self,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = Result<Vec<bool>, StoreError>> + Send {
        let store = self.0.clone();
        async move { store.mark_delivered_many(&items).await }
    }
}

/// Claims of existing clients by new sessions of this node: client -> its [`Claim`] (`None`:
/// unknown) and, in the same batch, its lease in Redis ([`Claimed`]).
pub struct Claims {
    pub store: Store,
    pub bus: Bus,
    pub node: String,
    pub lease: Duration,
}

/// A claimed client, and what Redis said of its lease: `Some(previous owner)` once this node
/// holds it; `None` when Redis could not be asked (the session asks again itself).
#[derive(Debug, Clone)]
pub struct Claimed {
    pub claim: Claim,
    pub lease: Option<Option<Owner>>,
}

impl BatchOp for Claims {
    type Item = ClientId;
    type Output = Option<Claimed>;
    const MAX: usize = 500;
    const NAME: &'static str = "claim clients";

    fn client(item: &Self::Item) -> ClientId {
        *item
    }

    /// The claims in MySQL (one transaction), then the leases of those claimed in Redis (one
    /// pipeline): after the commit, so a lease never names an epoch MySQL does not have.
    fn run(
        &self,
        items: Vec<ClientId>,
    ) -> impl Future<Output = Result<Vec<Option<Claimed>>, StoreError>> + Send {
        let (store, bus) = (self.store.clone(), self.bus.clone());
        let (node, lease) = (self.node.clone(), self.lease);
        async move {
            let claims = store.claim_clients(&items, &node).await?;
            let owners: Vec<(ClientId, Owner)> = items
                .iter()
                .zip(&claims)
                .filter_map(|(id, claim)| {
                    let owner = Owner {
                        node: node.clone(),
                        epoch: claim.as_ref()?.epoch,
                    };
                    Some((*id, owner))
                })
                .collect();
            let mut leases = match bus.claim_many(&owners, lease).await {
                Ok(previous) => previous.into_iter().map(Some).collect(),
                Err(e) => {
                    warn!(error = %e, count = owners.len(), "could not record ownership in Redis; sessions will retry");
                    vec![None; owners.len()]
                }
            }
            .into_iter();
            Ok(claims
                .into_iter()
                .map(|claim| {
                    let claim = claim?;
                    Some(Claimed {
                        claim,
                        lease: leases.next().flatten(),
                    })
                })
                .collect())
        }
    }
}

/// Posts of this node's sessions: (room, sender, body) -> the stored message or why not.
pub struct Posts(pub Store);

impl BatchOp for Posts {
    type Item = (RoomId, ClientId, Vec<u8>);
    type Output = Result<PostedRow, PostRefused>;
    const MAX: usize = 500;
    const NAME: &'static str = "post";

    fn client(item: &Self::Item) -> ClientId {
        // One post per sender per transaction: a session waits for its own anyway.
        item.1
    }

    fn run(
        &self,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = Result<Vec<Self::Output>, StoreError>> + Send {
        let store = self.0.clone();
        async move {
            let posts: Vec<NewPost<'_>> = items
                .iter()
                .map(|(room, sender, body)| NewPost {
                    room: *room,
                    sender: Some(*sender),
                    body,
                })
                .collect();
            store.post_many(&posts).await
        }
    }
}

/// Reads of room pages: (client, epoch, room, after_seq, limit) -> [`RoomFetch`].
pub struct RoomFetches(pub Store);

impl BatchOp for RoomFetches {
    type Item = (ClientId, u64, RoomId, u64, usize);
    type Output = RoomFetch;
    const MAX: usize = 200;
    const NAME: &'static str = "fetch room pages";

    fn client(item: &Self::Item) -> ClientId {
        item.0
    }

    fn run(
        &self,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = Result<Vec<RoomFetch>, StoreError>> + Send {
        let store = self.0.clone();
        async move { store.fetch_room_pages(&items).await }
    }
}

/// Room cursor writes: (client, epoch, cursors) -> recorded (false: the session lost the delivery
/// right).
pub struct RoomCursors(pub Store);

impl BatchOp for RoomCursors {
    type Item = (ClientId, u64, Vec<RoomCursor>);
    type Output = bool;
    // Sessions per transaction (each with up to all its rooms; one statement per 1,000 rows).
    const MAX: usize = 500;
    const NAME: &'static str = "record room cursors";

    fn client(item: &Self::Item) -> ClientId {
        item.0
    }

    fn run(
        &self,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = Result<Vec<bool>, StoreError>> + Send {
        let store = self.0.clone();
        async move { store.record_room_cursors(&items).await }
    }
}
