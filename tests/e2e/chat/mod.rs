//! The chat commands end to end, on clusters of real nodes: accounts, private rooms, group rooms, history and read cursors, presence and contacts, refusals and limits, and a crash under a busy room.

mod accounts;
mod faults;
mod history;
mod presence;
mod private;
mod refusals;
mod rooms;

use crate::support::node::{Env, Node};

/// Three nodes of one cluster.
pub fn cluster(env: &Env, extra: &[&str]) -> [Node; 3] {
    [
        env.node("a", extra),
        env.node("b", extra),
        env.node("c", extra),
    ]
}

/// A row count on the test's database.
pub fn count(env: &Env, sql: &str) -> u64 {
    env.count(sql)
}
