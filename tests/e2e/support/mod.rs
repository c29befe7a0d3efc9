//! Test support: private services, node launcher, test client.
#![allow(dead_code)]

pub mod chat;
pub mod client;
pub mod node;
pub mod ops;
pub mod services;
pub mod stream;
pub mod tls;
