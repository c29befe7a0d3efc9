//! `chat-enqueue --stdin`: one `<client_id><TAB><text>` message per input line, stored in batches.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use chat::enqueue::{EnqueueError, Enqueuer, MessageOptions};
use chat::ClientId;

use crate::report::{EXIT_INVALID, EXIT_OK, EXIT_STORE};

/// How long input may pause before the lines read so far are stored as a batch.
const LINGER: Duration = Duration::from_millis(200);

/// One input line that parsed: its number, client and text.
struct Line {
    number: u64,
    client: ClientId,
    text: String,
}

/// What reading one input line gave.
enum Read {
    Eof,
    Line(Vec<u8>),
    TooLong,
}

/// Reads stdin to its end, storing `batch` lines per transaction. Bad lines are reported on
/// stderr with their numbers and skipped; good lines are stored. Prints `<line> <message_id>` for
/// each stored line, then a summary on stderr. Exit: 0 all stored, 2 some lines refused, 1 MySQL
/// failed (the lines of earlier batches are stored; the summary says from which line nothing was).
pub async fn run(
    enqueuer: &Enqueuer,
    options: &MessageOptions,
    batch: usize,
    max_bytes: usize,
) -> u8 {
    let started = Instant::now();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // Room for an id, a TAB and the longest text; a longer line is refused without being kept.
    let limit = max_bytes + 64;
    // A thread reads stdin (blocking) a bounded number of lines ahead of the batches.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Read>>(batch.min(1024));
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        loop {
            let read = read_line(&mut input, limit);
            let end = !matches!(read, Ok(Read::Line(_) | Read::TooLong));
            if tx.blocking_send(read).is_err() || end {
                return;
            }
        }
    });
    let (mut number, mut stored, mut refused) = (0u64, 0u64, 0u64);
    let mut pending: Vec<Line> = Vec::with_capacity(batch);
    // Refusals of the lines read since the last batch, printed in line order with its own.
    let mut refusals: Vec<(u64, String)> = Vec::new();
    let mut eof = false;
    let mut redis_warned = false;
    // When the first line of the batch being gathered was read: a slow producer (`tail -f |
    // chat-enqueue --stdin`) gets its lines stored at most LINGER after they came, not only when
    // a batch is full.
    let mut gathering_since: Option<tokio::time::Instant> = None;
    while !eof {
        let next = match gathering_since {
            Some(since) => tokio::time::timeout_at(since + LINGER, rx.recv()).await,
            None => Ok(rx.recv().await),
        };
        let idle = match next {
            Err(_) => true,
            Ok(read) => {
                match read {
                    None | Some(Ok(Read::Eof)) => eof = true,
                    Some(Err(e)) => {
                        eprintln!("chat-enqueue: error: reading stdin: {e}");
                        eof = true;
                    }
                    Some(Ok(Read::TooLong)) => {
                        number += 1;
                        refusals.push((
                            number,
                            format!("longer than {max_bytes} bytes of text (--max-bytes)"),
                        ));
                    }
                    Some(Ok(Read::Line(raw))) => {
                        number += 1;
                        match parse(number, &raw) {
                            Ok(Some(line)) => {
                                gathering_since.get_or_insert_with(tokio::time::Instant::now);
                                pending.push(line)
                            }
                            Ok(None) => {}
                            Err(why) => refusals.push((number, why)),
                        }
                    }
                }
                false
            }
        };
        if pending.len() < batch && !eof && !idle {
            continue;
        }
        if pending.is_empty() {
            refuse(&mut refusals, &mut refused);
            continue;
        }
        let items: Vec<(ClientId, &str)> = pending
            .iter()
            .map(|l| (l.client, l.text.as_str()))
            .collect();
        let (results, notified) = match enqueuer.enqueue_batch_with(&items, options).await {
            Ok(done) => done,
            Err(e) => {
                refuse(&mut refusals, &mut refused);
                let _ = out.flush();
                // A failure that hit the batch's commit (a connection lost during it, a timeout)
                // leaves the batch's fate unknown, as for a single message (exit status 1).
                let first = pending.first().map_or(number, |l| l.number);
                let last = pending.last().map_or(number, |l| l.number);
                eprintln!(
                    "chat-enqueue: error: MySQL failed ({e}); nothing stored from line {first} on, \
                     unless the failure hit the commit of lines {first}-{last}"
                );
                summary(stored, refused, number, started);
                return EXIT_STORE;
            }
        };
        if let (Err(e), false) = (notified, redis_warned) {
            redis_warned = true;
            eprintln!(
                "chat-enqueue: warning: Redis is unreachable ({e}); the messages are stored and \
                 will be delivered by the nodes' sweep or when the clients next connect"
            );
        }
        for (line, result) in pending.iter().zip(results) {
            match result {
                Ok(s) => {
                    stored += 1;
                    let _ = writeln!(out, "{} {}", line.number, s.id);
                }
                Err(EnqueueError::UnknownClient(id)) => {
                    refusals.push((line.number, format!("unknown client id {id}")))
                }
                Err(e) => refusals.push((line.number, e.to_string())),
            }
        }
        refuse(&mut refusals, &mut refused);
        // The ids of this batch now, for a producer that reads them while it writes.
        let _ = out.flush();
        pending.clear();
        gathering_since = None;
    }
    let _ = out.flush();
    summary(stored, refused, number, started);
    if refused > 0 {
        EXIT_INVALID
    } else {
        EXIT_OK
    }
}

/// The last line on stderr: how many lines were stored and refused, and how fast.
fn summary(stored: u64, refused: u64, lines: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "chat-enqueue: {stored} stored, {refused} refused, {lines} lines in {secs:.2} s \
         ({:.0} messages/s)",
        stored as f64 / secs.max(1e-6)
    );
}

/// Prints the refusals in line order, counts them, and forgets them.
fn refuse(refusals: &mut Vec<(u64, String)>, refused: &mut u64) {
    refusals.sort_by_key(|(number, _)| *number);
    for (number, why) in refusals.drain(..) {
        *refused += 1;
        eprintln!("chat-enqueue: line {number}: {why}; skipped");
    }
}

/// One input line: `Ok(None)` for a blank line (skipped), `Err` with the reason it is refused.
fn parse(number: u64, raw: &[u8]) -> Result<Option<Line>, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "not valid UTF-8".to_string())?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let (id, body) = text
        .split_once('\t')
        .ok_or("expected <client_id><TAB><text>")?;
    let client: ClientId = id
        .trim()
        .parse()
        .map_err(|e| format!("{:?} is {e}", id.trim()))?;
    Ok(Some(Line {
        number,
        client,
        text: body.to_string(),
    }))
}

/// Reads one line (LF or CRLF), keeping at most `limit` bytes of it.
fn read_line(input: &mut impl BufRead, limit: usize) -> std::io::Result<Read> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            if line.is_empty() && !too_long {
                return Ok(Read::Eof);
            }
            break;
        }
        let (chunk, end) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if line.len() + chunk.len() > limit {
            too_long = true;
        } else {
            line.extend_from_slice(chunk);
        }
        let used = end.unwrap_or(buf.len());
        input.consume(used);
        if end.is_some() {
            break;
        }
    }
    if too_long {
        return Ok(Read::TooLong);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Read::Line(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_lf_and_crlf_and_long_ones_are_refused() {
        let mut input = std::io::Cursor::new(b"a\tb\r\nccccc\nx".to_vec());
        assert!(matches!(read_line(&mut input, 4).unwrap(), Read::Line(l) if l == b"a\tb"));
        assert!(matches!(read_line(&mut input, 4).unwrap(), Read::TooLong));
        assert!(matches!(read_line(&mut input, 4).unwrap(), Read::Line(l) if l == b"x"));
        assert!(matches!(read_line(&mut input, 4).unwrap(), Read::Eof));
    }

    #[test]
    fn input_lines_need_an_id_a_tab_and_text() {
        let id = ClientId::random();
        let ok = parse(1, format!("{id}\thello world").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!((ok.client, ok.text.as_str()), (id, "hello world"));
        assert!(parse(2, b"   ").unwrap().is_none());
        assert!(parse(3, b"no tab here").is_err());
        assert!(parse(4, b"not-an-id\thi").is_err());
        assert!(parse(5, b"\xff\thi").is_err());
    }
}
