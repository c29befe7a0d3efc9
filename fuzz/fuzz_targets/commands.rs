//! Fuzzes the protocol parsers: every LF-separated line goes through `parse_hello` and
//! `parse_command`; every refusal must render with `Reply::Error` as one short, printable
//! `ERROR: ...` line ending in CRLF.
#![no_main]

use std::fmt::Display;

use chat::protocol::{parse_command, parse_hello, Reply, SessionError};
use libfuzzer_sys::fuzz_target;

fn check_error(err: &(dyn Display + Sync)) {
    let text = err.to_string();
    assert!(!text.is_empty());
    assert!(text.len() < 200, "{} bytes: {text:?}", text.len());
    assert!(
        !text.chars().any(char::is_control),
        "control character in {text:?}"
    );
    let rendered = Reply::Error(err).to_bytes();
    let line = rendered
        .strip_prefix(b"ERROR: ")
        .and_then(|r| r.strip_suffix(b"\r\n"))
        .unwrap_or_else(|| panic!("not an ERROR line: {rendered:?}"));
    assert!(
        !line.iter().any(|&b| b == b'\r' || b == b'\n'),
        "line break inside {rendered:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        if let Err(e) = parse_hello(line) {
            check_error(&e);
            check_error(&SessionError::from(e));
        }
        if let Err(e) = parse_command(line) {
            check_error(&e);
        }
    }
});
