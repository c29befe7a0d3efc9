//! Fuzzes `LineCodec::new(64)` with input split into reads whose sizes come from the input itself.
//!
//! Layout of a fuzz input: byte 0 = how many size bytes follow (mod 8); those bytes are the read
//! sizes, used in turn and cycled (0 = an empty read); the rest is the stream. Checked: no line
//! over 64 bytes, no LF or NUL in a line, only `TooLong(64)` as an error, nothing left unread when
//! `decode` asks for more, and the same result as one single read.
#![no_main]

use bytes::{Bytes, BytesMut};
use chat::codec::{LineCodec, LineError};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const MAX_LEN: usize = 64;

#[derive(Debug, PartialEq, Eq)]
enum Out {
    Line(Vec<u8>),
    TooLong,
}

/// Records one result; `false` once the stream is over (no item, or an error, which ends a
/// `FramedRead`).
fn record(out: &mut Vec<Out>, result: Result<Option<Bytes>, LineError>) -> bool {
    match result {
        Ok(Some(line)) => {
            assert!(line.len() <= MAX_LEN, "line of {} bytes", line.len());
            assert!(!line.contains(&b'\n'), "LF inside a line: {line:?}");
            assert!(!line.contains(&0), "NUL inside a line: {line:?}");
            out.push(Out::Line(line.to_vec()));
            true
        }
        Ok(None) => false,
        Err(LineError::TooLong(n)) => {
            assert_eq!(n, MAX_LEN);
            out.push(Out::TooLong);
            false
        }
        Err(LineError::Io(e)) => panic!("the codec invented an I/O error: {e}"),
    }
}

fn decode(stream: &[u8], sizes: &[u8]) -> Vec<Out> {
    let mut codec = LineCodec::new(MAX_LEN);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = stream;
    let mut sizes = sizes.iter().cycle();
    let mut empty_reads = 0;
    while !rest.is_empty() {
        let size = match sizes.next() {
            // No sizes, or only zeros for a while: one read of everything left.
            None => rest.len(),
            Some(_) if empty_reads > 8 => rest.len(),
            Some(&s) => usize::from(s).min(rest.len()),
        };
        empty_reads = if size == 0 { empty_reads + 1 } else { 0 };
        buf.extend_from_slice(&rest[..size]);
        rest = &rest[size..];
        loop {
            let result = codec.decode(&mut buf);
            let waiting = matches!(result, Ok(None));
            if !record(&mut out, result) {
                if !waiting {
                    return out;
                }
                assert!(
                    buf.is_empty(),
                    "decode wants more but left {} bytes",
                    buf.len()
                );
                break;
            }
            assert!(out.len() <= stream.len() + 1);
        }
    }
    while record(&mut out, codec.decode_eof(&mut buf)) {
        assert!(
            out.len() <= stream.len() + 1,
            "decode_eof keeps returning lines"
        );
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    let chunked = decode(stream, sizes);
    let whole = decode(stream, &[]);
    assert_eq!(chunked, whole, "the split into reads changed the lines");
});
