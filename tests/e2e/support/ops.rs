//! The node's operations port from outside: plain HTTP GETs and Prometheus text parsing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// `GET path` on 127.0.0.1:`port`: the status code and the body.
pub fn get(port: u16, path: &str) -> (u16, String) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("HTTP response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The metrics of the node on `port`.
pub fn scrape(port: u16) -> Metrics {
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, 200, "{body}");
    Metrics(body)
}

/// One scrape of Prometheus text.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the series written exactly as `series` (`name` or `name{label="v"}`); 0 when
    /// absent.
    pub fn value(&self, series: &str) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == series).then(|| value.parse().expect("number"))
            })
            .unwrap_or(0.0)
    }
}

/// Waits (at most 30 s) until `series` on the node's metrics port reaches `at_least`; returns the
/// scrape that showed it.
pub fn wait_metric(port: u16, series: &str, at_least: f64) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = scrape(port);
        if metrics.value(series) >= at_least {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed below {at_least}:\n{}",
            metrics.0
        );
        thread::sleep(Duration::from_millis(50));
    }
}
