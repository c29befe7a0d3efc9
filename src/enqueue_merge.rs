//! Group commit across producers: enqueue calls that overlap on one `Enqueuer` share one MySQL transaction.
//!
//! A call queues its messages and waits for its results. When no transaction of this enqueuer is
//! under way, the call starts a task that takes every queued call (up to [`MAX_ITEMS`] messages)
//! into one transaction, answers each call with its own results, and starts over until nothing is
//! queued. A quiet producer's call therefore runs at once, alone, as before; callers that overlap
//! (the tasks of one producer process) share a transaction, and a client that several of them
//! write to has its queue head updated once per transaction instead of once per call, without
//! their transactions waiting on each other's row locks. A single plain message is the exception
//! while nothing is queued: it runs at once in its own one-round-trip transaction (up to
//! [`ALONE`] of them at a time), since singles for different clients do not conflict and their
//! log flushes are shared by MariaDB anyway; beyond that they queue and share like the rest.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::store::{MessageOptions, NewMessage, Store, StoreError, Stored};
use crate::ClientId;

/// Most messages one shared transaction takes; a single larger call still goes alone.
pub const MAX_ITEMS: usize = 5_000;
/// Messages that may wait in the queue of one enqueuer; beyond that, calls wait for room.
const QUEUED: usize = 50_000;
/// Single messages stored on their own at once; more than this queue and share transactions.
const ALONE: usize = 4;
/// Longest wait for a call's results: the transactions queued ahead of it and its own, each
/// bounded by the store's query timeouts.
const WAIT: Duration = Duration::from_secs(60);

/// A call's results: one per message, `None` for an unknown client.
type Results = Result<Vec<Option<Stored>>, StoreError>;
type Reply = oneshot::Sender<Results>;

/// One queued call: its messages (all with the same options) and where its results go.
struct Call {
    options: MessageOptions,
    items: Vec<(ClientId, Vec<u8>)>,
    reply: Reply,
    /// Its room in the queue, given back when the call is answered.
    _room: Option<OwnedSemaphorePermit>,
}

#[derive(Default)]
struct Queue {
    calls: VecDeque<Call>,
    /// A task is taking the queued calls into transactions.
    running: bool,
    /// Single messages stored on their own at this moment (see [`Merger::enqueue`]).
    alone: usize,
}

/// The queue of calls of one enqueuer.
pub struct Merger {
    store: Store,
    dedupe_window: Duration,
    queue: Arc<Mutex<Queue>>,
    /// Messages that may wait in the queue: a call waits for room ([`QUEUED`]).
    room: Arc<Semaphore>,
}

impl Merger {
    pub fn new(store: Store, dedupe_window: Duration) -> Merger {
        Merger {
            store,
            dedupe_window,
            queue: Arc::default(),
            room: Arc::new(Semaphore::new(QUEUED)),
        }
    }

    pub fn set_dedupe_window(&mut self, window: Duration) {
        self.dedupe_window = window;
    }

    /// Stores `items` (in one transaction, maybe shared with other calls): one result per item,
    /// in order, `None` for an unknown client, as [`Store::enqueue_batch`].
    pub async fn enqueue(
        &self,
        items: Vec<(ClientId, Vec<u8>)>,
        options: &MessageOptions,
    ) -> Results {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        if let [(client, body)] = &items[..] {
            if options.is_plain() {
                if let Some(_alone) = Alone::enter(&self.queue) {
                    // A single plain message while nothing queues: its own one-round-trip
                    // transaction, at once (singles for other clients do not conflict, and
                    // MariaDB shares their log flush). Only when they pile up do they join.
                    let item = NewMessage {
                        client: *client,
                        body,
                        options,
                    };
                    return self.store.enqueue_batch(&[item], self.dedupe_window).await;
                }
            }
        }
        // Room in the queue first (a call larger than the queue takes all of it).
        let wanted = u32::try_from(items.len().min(QUEUED)).unwrap_or(u32::MAX);
        let room =
            match tokio::time::timeout(WAIT, self.room.clone().acquire_many_owned(wanted)).await {
                Ok(Ok(room)) => Some(room),
                Ok(Err(_)) => return Err(StoreError::BatcherGone),
                Err(_) => return Err(StoreError::Timeout(WAIT)),
            };
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = lock(&self.queue);
            queue.calls.push_back(Call {
                options: options.clone(),
                items,
                reply,
                _room: room,
            });
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            // A task of its own: a caller that gives up (a timeout around it) must not take the
            // transaction of the others down with it.
            let queue = Running {
                queue: self.queue.clone(),
                finished: false,
            };
            tokio::spawn(run(self.store.clone(), self.dedupe_window, queue));
        }
        match tokio::time::timeout(WAIT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::BatcherGone),
            Err(_) => Err(StoreError::Timeout(WAIT)),
        }
    }
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // The queue is consistent after any panic (a push or a pop): a poisoned lock is still usable.
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

/// A single message being stored on its own; counted while it is under way.
struct Alone<'a>(&'a Mutex<Queue>);

impl<'a> Alone<'a> {
    /// Room for one more single on its own: nothing queued, and fewer than [`ALONE`] under way.
    fn enter(queue: &'a Mutex<Queue>) -> Option<Alone<'a>> {
        let mut locked = lock(queue);
        if !locked.calls.is_empty() || locked.alone >= ALONE {
            return None;
        }
        locked.alone += 1;
        Some(Alone(queue))
    }
}

impl Drop for Alone<'_> {
    fn drop(&mut self) {
        lock(self.0).alone -= 1;
    }
}

/// The running task's hold on the queue: if the task ends in any other way than finding it empty
/// (a panic, the runtime shutting down), the calls still queued fail and the next call starts a
/// new task.
struct Running {
    queue: Arc<Mutex<Queue>>,
    /// Ended by finding the queue empty (then a newer task may already be running).
    finished: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            let mut queue = lock(&self.queue);
            queue.running = false;
            queue.calls.clear();
        }
    }
}

/// The calls at the front of the queue that fit in one transaction (at least one).
fn take(queue: &mut Queue) -> Vec<Call> {
    let mut taken = Vec::new();
    let mut count = 0;
    while let Some(next) = queue.calls.front() {
        if next.reply.is_closed() {
            // Its caller is gone (dropped, timed out) before it was taken: nothing of it is
            // stored, as if the call had not been made.
            queue.calls.pop_front();
            continue;
        }
        if !taken.is_empty() && count + next.items.len() > MAX_ITEMS {
            break;
        }
        count += next.items.len();
        taken.extend(queue.calls.pop_front());
    }
    taken
}

async fn run(store: Store, dedupe_window: Duration, mut queue: Running) {
    loop {
        let calls = {
            let mut locked = lock(&queue.queue);
            let calls = take(&mut locked);
            if calls.is_empty() {
                // From here a new call starts a new task.
                locked.running = false;
                drop(locked);
                queue.finished = true;
                return;
            }
            calls
        };
        let items: Vec<NewMessage<'_>> = calls
            .iter()
            .flat_map(|call| {
                call.items.iter().map(|(client, body)| NewMessage {
                    client: *client,
                    body,
                    options: &call.options,
                })
            })
            .collect();
        let result = store.enqueue_batch(&items, dedupe_window).await;
        drop(items);
        answer(calls, result);
    }
}

/// Gives each call its own slice of the shared results, or the shared failure.
fn answer(calls: Vec<Call>, result: Results) {
    match result {
        Ok(stored) => {
            let mut stored = stored.into_iter();
            for call in calls {
                let own: Vec<Option<Stored>> = stored.by_ref().take(call.items.len()).collect();
                let _ = call.reply.send(Ok(own));
            }
        }
        Err(e) if calls.len() == 1 => {
            if let Some(call) = calls.into_iter().next() {
                let _ = call.reply.send(Err(e));
            }
        }
        Err(e) => {
            let count: usize = calls.iter().map(|c| c.items.len()).sum();
            warn!(error = %e, calls = calls.len(), count, "shared enqueue transaction failed");
            for call in calls {
                let _ = call.reply.send(Err(shared(&e)));
            }
        }
    }
}

/// The failure of a shared transaction, for each of its calls: its kind where it has one that
/// callers act on (a timeout: the outcome is unknown; a missing schema), else its text.
fn shared(e: &StoreError) -> StoreError {
    match e {
        StoreError::Timeout(limit) => StoreError::Timeout(*limit),
        StoreError::NoSchema => StoreError::NoSchema,
        other => StoreError::Shared(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(n: usize) -> (Call, oneshot::Receiver<Results>) {
        let (reply, answer) = oneshot::channel();
        let items = (0..n)
            .map(|_| (ClientId::random(), b"x".to_vec()))
            .collect();
        let options = MessageOptions::default();
        (
            Call {
                options,
                items,
                reply,
                _room: None,
            },
            answer,
        )
    }

    #[test]
    fn a_transaction_takes_queued_calls_up_to_the_bound_and_at_least_one() {
        let mut queue = Queue::default();
        let mut answers = Vec::new();
        for n in [MAX_ITEMS + 1, 2_000, 2_000, 1_001, 3] {
            let (call, answer) = call(n);
            queue.calls.push_back(call);
            answers.push(answer);
        }
        let sizes = |calls: Vec<Call>| calls.iter().map(|c| c.items.len()).collect::<Vec<_>>();
        assert_eq!(sizes(take(&mut queue)), vec![MAX_ITEMS + 1]);
        assert_eq!(sizes(take(&mut queue)), vec![2_000, 2_000]);
        assert_eq!(sizes(take(&mut queue)), vec![1_001, 3]);
        assert!(take(&mut queue).is_empty());
    }

    #[test]
    fn each_call_gets_its_own_results_in_order() {
        let (a, mut got_a) = call(2);
        let (b, mut got_b) = call(1);
        let stored = |seq| {
            Some(Stored {
                id: seq * 10,
                seq,
                duplicate: false,
                replaced: 0,
            })
        };
        answer(vec![a, b], Ok(vec![stored(1), None, stored(3)]));
        assert_eq!(got_a.try_recv().unwrap().unwrap(), vec![stored(1), None]);
        assert_eq!(got_b.try_recv().unwrap().unwrap(), vec![stored(3)]);
    }

    #[test]
    fn a_shared_failure_reaches_every_call() {
        let (a, mut got_a) = call(1);
        let (b, mut got_b) = call(1);
        answer(vec![a, b], Err(StoreError::Timeout(Duration::from_secs(1))));
        for got in [got_a.try_recv(), got_b.try_recv()] {
            assert!(matches!(got, Ok(Err(StoreError::Timeout(_)))));
        }
        let (a, mut got_a) = call(1);
        let (b, mut got_b) = call(1);
        answer(vec![a, b], Err(StoreError::BatcherGone));
        for got in [got_a.try_recv(), got_b.try_recv()] {
            assert!(matches!(got, Ok(Err(StoreError::Shared(t))) if t.contains("stopped")));
        }
    }

    #[test]
    fn a_task_that_finished_leaves_the_queue_to_its_successor() {
        // Between a task finding the queue empty and its end, a call may start the next task:
        // the finished task's end must leave that call and that task alone.
        let queue: Arc<Mutex<Queue>> = Arc::default();
        let (next, mut got) = call(1);
        {
            let mut locked = lock(&queue);
            locked.calls.push_back(next);
            locked.running = true;
        }
        drop(Running {
            queue: queue.clone(),
            finished: true,
        });
        assert!(lock(&queue).running);
        assert_eq!(lock(&queue).calls.len(), 1);
        assert!(
            got.try_recv().is_err(),
            "the call still waits for its answer"
        );
        // A task that did not finish (a panic, a runtime shutting down) fails what is queued and
        // lets the next call start a task.
        drop(Running {
            queue: queue.clone(),
            finished: false,
        });
        assert!(!lock(&queue).running);
        assert!(lock(&queue).calls.is_empty());
        assert!(matches!(
            got.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
    }

    #[test]
    fn a_call_whose_caller_is_gone_is_not_taken() {
        let mut queue = Queue::default();
        let (gone, answer) = call(3);
        drop(answer);
        let (kept, _answer) = call(2);
        queue.calls.push_back(gone);
        queue.calls.push_back(kept);
        let taken = take(&mut queue);
        assert_eq!(
            taken.iter().map(|c| c.items.len()).collect::<Vec<_>>(),
            vec![2]
        );
        assert!(queue.calls.is_empty());
    }
}
