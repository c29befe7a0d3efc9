//! Property tests for the wire edge: `LineCodec` framing (chunking, CRLF, bounds, telnet IAC) and the protocol's parsers and replies.

use bytes::BytesMut;
use chat::codec::{LineCodec, LineError};
use chat::protocol::{parse_command, parse_hello, Reply, SessionError};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use tokio_util::codec::Decoder;

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;

/// One thing the codec produced. A stream ends at its first error, as `FramedRead` ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Line(Vec<u8>),
    TooLong(usize),
}

/// Records one `decode`/`decode_eof` result; `false` once the stream is over (no item or an error).
fn record(out: &mut Vec<Out>, result: Result<Option<bytes::Bytes>, LineError>) -> bool {
    match result {
        Ok(Some(line)) => {
            out.push(Out::Line(line.to_vec()));
            true
        }
        Ok(None) => false,
        Err(LineError::TooLong(n)) => {
            out.push(Out::TooLong(n));
            false
        }
        Err(LineError::Io(e)) => panic!("the codec invented an I/O error: {e}"),
    }
}

/// Feeds `chunks` in turn to one codec, as reads from a socket would arrive, then ends the input.
fn decode_chunks(max_len: usize, chunks: &[&[u8]]) -> Vec<Out> {
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let mut codec = LineCodec::new(max_len);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let result = codec.decode(&mut buf);
            let waiting = matches!(result, Ok(None));
            if !record(&mut out, result) {
                if !waiting {
                    return out;
                }
                // Only the line being assembled may be kept, inside the codec: nothing left unread.
                assert!(
                    buf.is_empty(),
                    "decode wants more input but left {} bytes",
                    buf.len()
                );
                break;
            }
            assert!(out.len() <= total + 1, "more lines than input bytes");
        }
    }
    while record(&mut out, codec.decode_eof(&mut buf)) {
        assert!(out.len() <= total + 1, "decode_eof keeps returning lines");
    }
    out
}

fn decode_all(max_len: usize, input: &[u8]) -> Vec<Out> {
    decode_chunks(max_len, &[input])
}

/// `input` cut at the given points (sorted, repeats allowed: empty reads happen too).
fn cut<'a>(input: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for end in at {
        chunks.push(&input[start..end]);
        start = end;
    }
    chunks.push(&input[start..]);
    chunks
}

/// The reference framing for input without telnet or NUL bytes: split on LF, drop one trailing CR,
/// and a last unterminated piece counts if it is not empty.
fn oracle(input: &[u8]) -> Vec<Out> {
    let mut pieces: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    if pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    pieces
        .into_iter()
        .map(|p| Out::Line(p.strip_suffix(b"\r").unwrap_or(p).to_vec()))
        .collect()
}

/// The length of the longest line in `lines`.
fn longest(lines: &[Out]) -> usize {
    lines
        .iter()
        .map(|o| match o {
            Out::Line(l) => l.len(),
            Out::TooLong(_) => 0,
        })
        .max()
        .unwrap_or(0)
}

/// Maps a uniform random byte to a wire byte, weighted toward the ones the codec treats specially.
/// (A lookup rather than `prop_oneof!` per byte, which is ~50x slower in a debug build.)
/// 0 maps to a space, so failures shrink toward plain text.
fn wire(b: u8) -> u8 {
    const TELNET: [u8; 8] = [SE, 241, 244, SB, 251, 252, 253, 254];
    match b {
        0..=94 => b' ' + b,
        95..=124 => b'\n',
        125..=154 => b'\r',
        155..=164 => 0,
        165..=194 => IAC,
        195..=214 => TELNET[usize::from(b % 8)],
        // The rest of the byte range: C0 controls and high bytes.
        215..=234 => b - 214,
        235..=255 => b - 100,
    }
}

/// Maps a uniform random byte to a text byte: neither NUL nor IAC, with many line endings.
fn text(b: u8) -> u8 {
    match b {
        0..=94 => b' ' + b,
        95..=134 => b'\n',
        135..=174 => b'\r',
        175..=214 => b - 174,
        215..=255 => b - 87,
    }
}

/// Text input of up to `max` bytes that also has literal 0xFF bytes (to be sent as IAC IAC).
fn text_with_ff_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max).prop_map(|v| {
        v.into_iter()
            .map(|b| if b >= 240 { IAC } else { text(b) })
            .collect()
    })
}

/// Wire input of up to `max` bytes.
fn wire_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max).prop_map(|v| v.into_iter().map(wire).collect())
}

/// Text input of up to `max` bytes.
fn text_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max).prop_map(|v| v.into_iter().map(text).collect())
}

/// A telnet sequence the codec must drop whole.
fn telnet_noise() -> impl Strategy<Value = Vec<u8>> {
    // Subnegotiation payload: any byte but IAC, or IAC IAC (an escaped 0xFF inside SB).
    let payload = vec(
        prop_oneof![
            4 => (0u8..=254).prop_map(|b| vec![b]),
            1 => Just(vec![IAC, IAC]),
        ],
        0..12,
    );
    prop_oneof![
        // IAC WILL/WONT/DO/DONT <option>: the option may be any byte, even LF or IAC.
        (251u8..=254, any::<u8>()).prop_map(|(verb, option)| vec![IAC, verb, option]),
        // IAC SB <option> ... IAC SE; the option is not IAC (a 0xFF there would have to be doubled).
        (0u8..=254, payload).prop_map(|(option, body)| {
            let mut seq = vec![IAC, SB, option];
            seq.extend(body.into_iter().flatten());
            seq.extend([IAC, SE]);
            seq
        }),
        // NOP, DM, BRK, IP, AO, AYT, GA.
        prop::sample::select(vec![241u8, 242, 243, 244, 245, 246, 249]).prop_map(|c| vec![IAC, c]),
    ]
}

/// Client input for the parsers: raw bytes, any Unicode, or near-miss protocol words.
fn client_line() -> impl Strategy<Value = Vec<u8>> {
    let word = prop_oneof![
        prop::sample::select(vec![
            "NONE",
            "none",
            "ACK",
            "ack",
            "PING",
            "DISCONNECT",
            "42",
            "-1",
            "18446744073709551616",
            "7c0a8f4e-3b1d-4c2e-9f00-1a2b3c4d5e6f",
            "7C0A8F4E-3B1D-4C2E-9F00-1A2B3C4D5E6",
            "\"",
            "\u{1b}[2J",
            "\u{202e}",
        ])
        .prop_map(|w| w.as_bytes().to_vec()),
        "\\PC{0,40}".prop_map(String::into_bytes),
        vec(any::<u8>(), 0..40),
    ];
    let blank = prop::sample::select(vec![&b" "[..], b"\t", b"  ", b"\x0b", b"\x0c", b"\r"]);
    prop_oneof![
        vec(any::<u8>(), 0..120),
        "\\PC{0,80}".prop_map(String::into_bytes),
        vec((blank, word), 0..5).prop_map(|parts| {
            parts
                .into_iter()
                .flat_map(|(blank, word)| blank.iter().copied().chain(word))
                .collect()
        }),
    ]
}

/// An error's text, as sent after `ERROR: `, is short, printable, and a single line.
fn check_error_text(text: &str) {
    assert!(!text.is_empty());
    assert!(text.len() < 200, "{} bytes: {text:?}", text.len());
    assert!(
        !text.chars().any(char::is_control),
        "control character in {text:?}"
    );
}

/// A rendered reply is exactly one CRLF-terminated line.
fn check_one_line(rendered: &[u8]) {
    let body = rendered
        .strip_suffix(b"\r\n")
        .unwrap_or_else(|| panic!("no CRLF at the end of {rendered:?}"));
    assert!(
        !body.iter().any(|&b| b == b'\r' || b == b'\n'),
        "line break inside {rendered:?}"
    );
}

fn check_error_reply(err: &(dyn std::fmt::Display + Sync)) {
    check_error_text(&err.to_string());
    let rendered = Reply::Error(err).to_bytes();
    assert!(rendered.starts_with(b"ERROR: "), "{rendered:?}");
    check_one_line(&rendered);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    // Framing does not depend on how the input is split into reads.
    #[test]
    fn chunking_does_not_change_the_lines(
        input in wire_bytes(400),
        cuts in vec(any::<Index>(), 0..24),
        max_len in 0usize..48,
    ) {
        let whole = decode_all(max_len, &input);
        let chunked = decode_chunks(max_len, &cut(&input, &cuts));
        prop_assert_eq!(chunked, whole);
    }

    // Plain text (no NUL, no IAC, no line over the bound) frames as "split on LF, drop one CR".
    #[test]
    fn plain_text_splits_on_lf_and_drops_one_cr(
        input in text_bytes(400),
        slack in 0usize..3,
        cuts in vec(any::<Index>(), 0..8),
    ) {
        let expected = oracle(&input);
        let max_len = longest(&expected) + slack;
        prop_assert_eq!(decode_all(max_len, &input), expected.clone());
        prop_assert_eq!(decode_chunks(max_len, &cut(&input, &cuts)), expected);
    }

    // Whatever arrives, no line exceeds the bound or carries LF or NUL, and nothing is left unread.
    #[test]
    fn lines_stay_within_bounds(
        input in wire_bytes(600),
        cuts in vec(any::<Index>(), 0..24),
        max_len in 0usize..48,
    ) {
        for out in decode_chunks(max_len, &cut(&input, &cuts)) {
            match out {
                Out::Line(line) => {
                    prop_assert!(line.len() <= max_len, "{} bytes > {}", line.len(), max_len);
                    prop_assert!(!line.contains(&b'\n'));
                    prop_assert!(!line.contains(&0));
                }
                Out::TooLong(n) => prop_assert_eq!(n, max_len),
            }
        }
    }

    // An endless line fails with TooLong once past the bound (+1 spare byte for a CR), not later,
    // and the codec stops reading there instead of buffering the rest.
    #[test]
    fn an_endless_line_fails_early(
        max_len in 0usize..80,
        content in vec(any::<u8>(), 200..400)
            .prop_map(|v| v.into_iter().map(|b| match b { 0 | b'\n' | IAC => b'x', b => b }).collect::<Vec<u8>>()),
    ) {
        // One byte per read.
        let mut codec = LineCodec::new(max_len);
        let mut buf = BytesMut::new();
        let mut failed_at = None;
        for (i, &b) in content.iter().enumerate() {
            buf.extend_from_slice(&[b]);
            match codec.decode(&mut buf) {
                Ok(None) => prop_assert!(buf.is_empty()),
                Ok(Some(line)) => prop_assert!(false, "a line without LF: {:?}", line),
                Err(LineError::TooLong(n)) => {
                    prop_assert_eq!(n, max_len);
                    failed_at = Some(i + 1);
                    break;
                }
                Err(e) => prop_assert!(false, "unexpected error {}", e),
            }
        }
        let fed = failed_at.expect("no TooLong for a line far over the bound");
        prop_assert!(fed > max_len, "TooLong after {} bytes with max_len {}", fed, max_len);
        prop_assert!(fed <= max_len + 2, "TooLong only after {} bytes with max_len {}", fed, max_len);

        // All in one read: the error comes at the same place, the rest is left unread.
        let mut codec = LineCodec::new(max_len);
        let mut buf = BytesMut::from(&content[..]);
        prop_assert!(matches!(codec.decode(&mut buf), Err(LineError::TooLong(_))));
        prop_assert_eq!(content.len() - buf.len(), fed);
    }

    // Telnet negotiation and commands inserted anywhere in a text leave its lines unchanged.
    #[test]
    fn telnet_sequences_are_invisible(
        text in text_bytes(300),
        noise in vec((any::<Index>(), telnet_noise()), 0..12),
        max_len in 8usize..64,
    ) {
        let mut at: Vec<(usize, Vec<u8>)> = noise
            .into_iter()
            .map(|(i, seq)| (i.index(text.len() + 1), seq))
            .collect();
        at.sort_by_key(|(i, _)| *i);
        let mut noisy = Vec::new();
        let mut start = 0;
        for (i, seq) in at {
            noisy.extend_from_slice(&text[start..i]);
            noisy.extend_from_slice(&seq);
            start = i;
        }
        noisy.extend_from_slice(&text[start..]);
        prop_assert_eq!(decode_all(max_len, &noisy), decode_all(max_len, &text));
    }

    // A literal 0xFF sent as IAC IAC (possibly split across reads) arrives as one 0xFF byte.
    #[test]
    fn iac_iac_is_a_literal_ff(
        text in text_with_ff_bytes(300),
        slack in 0usize..3,
        cuts in vec(any::<Index>(), 0..16),
    ) {
        let wire: Vec<u8> = text
            .iter()
            .flat_map(|&b| if b == IAC { vec![IAC, IAC] } else { vec![b] })
            .collect();
        let expected = oracle(&text);
        let max_len = longest(&expected) + slack;
        prop_assert_eq!(decode_chunks(max_len, &cut(&wire, &cuts)), expected);
    }

    // The parsers never panic, and every refusal renders as one short, printable ERROR line.
    #[test]
    fn parser_errors_are_one_safe_line(line in client_line()) {
        if let Err(e) = parse_hello(&line) {
            check_error_reply(&e);
            check_error_reply(&SessionError::from(e));
        }
        if let Err(e) = parse_command(&line) {
            check_error_reply(&e);
        }
    }

    // A message body without CR/LF goes out verbatim on exactly one line.
    #[test]
    fn messages_render_as_one_line(
        body in vec(any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'), 0..300),
        id in any::<u64>(),
    ) {
        let plain = Reply::Message(&body).to_bytes();
        prop_assert_eq!(&plain[..], &[&b"MESSAGE: "[..], &body, b"\r\n"].concat()[..]);
        check_one_line(&plain);

        let acked = Reply::AckedMessage(id, &body).to_bytes();
        let head = format!("MESSAGE {id}: ");
        prop_assert_eq!(&acked[..], &[head.as_bytes(), &body, b"\r\n"].concat()[..]);
        check_one_line(&acked);
    }

    // Any body, CR and LF included, stays on one line: a stored message cannot forge a reply.
    #[test]
    fn any_message_stays_on_one_line(body in wire_bytes(300), id in any::<u64>()) {
        let plain = Reply::Message(&body).to_bytes();
        prop_assert!(plain.starts_with(b"MESSAGE: "));
        check_one_line(&plain);
        prop_assert_eq!(plain.len(), b"MESSAGE: \r\n".len() + body.len());
        check_one_line(&Reply::AckedMessage(id, &body).to_bytes());
    }
}
