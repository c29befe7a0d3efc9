//! Line framing for client input: LF or CRLF endings, a line-length bound, telnet IAC sequences stripped.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const WILL: u8 = 251;
const DONT: u8 = 254;

/// Where the decoder stands in the telnet byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Telnet {
    Data,
    /// After IAC.
    Command,
    /// After IAC WILL/WONT/DO/DONT: one option byte follows.
    Option,
    /// Inside IAC SB ... IAC SE.
    Sub,
    /// After IAC inside a subnegotiation.
    SubCommand,
}

/// Why a line could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("line longer than {0} bytes")]
    TooLong(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Splits client input into lines of at most `max_len` bytes (terminator excluded).
///
/// Telnet negotiation and commands (IAC ...) are dropped, `IAC IAC` is a literal 0xFF,
/// NUL bytes (telnet's "CR NUL") are dropped. Only the current line is buffered, so memory per
/// connection stays bounded by `max_len` whatever the peer sends.
#[derive(Debug)]
pub struct LineCodec {
    max_len: usize,
    line: Vec<u8>,
    telnet: Telnet,
}

impl LineCodec {
    pub fn new(max_len: usize) -> LineCodec {
        LineCodec {
            max_len,
            line: Vec::new(),
            telnet: Telnet::Data,
        }
    }

    fn push(&mut self, byte: u8) -> Result<(), LineError> {
        // One spare byte for the CR of a CRLF ending.
        if self.line.len() > self.max_len {
            return Err(LineError::TooLong(self.max_len));
        }
        self.line.push(byte);
        Ok(())
    }

    fn finish_line(&mut self) -> Result<Bytes, LineError> {
        if self.line.last() == Some(&b'\r') {
            self.line.truncate(self.line.len() - 1);
        }
        if self.line.len() > self.max_len {
            return Err(LineError::TooLong(self.max_len));
        }
        // Taken whole: between lines the codec holds no buffer (idle connections cost nothing).
        Ok(Bytes::from(std::mem::take(&mut self.line)))
    }

    /// Decodes from `src`: how many bytes it used, and the line (or error) they ended, if any.
    /// Bytes of an unfinished line are kept in the codec.
    pub fn decode_slice(&mut self, src: &[u8]) -> (usize, Option<Result<Bytes, LineError>>) {
        let mut consumed = 0;
        let mut found = None;
        for &byte in src {
            consumed += 1;
            match self.telnet {
                Telnet::Data => match byte {
                    IAC => self.telnet = Telnet::Command,
                    b'\n' => {
                        found = Some(self.finish_line());
                        break;
                    }
                    0 => {}
                    _ => {
                        if let Err(e) = self.push(byte) {
                            found = Some(Err(e));
                            break;
                        }
                    }
                },
                Telnet::Command => {
                    self.telnet = match byte {
                        IAC => {
                            if let Err(e) = self.push(IAC) {
                                found = Some(Err(e));
                                break;
                            }
                            Telnet::Data
                        }
                        WILL..=DONT => Telnet::Option,
                        SB => Telnet::Sub,
                        _ => Telnet::Data,
                    }
                }
                Telnet::Option => self.telnet = Telnet::Data,
                Telnet::Sub => {
                    if byte == IAC {
                        self.telnet = Telnet::SubCommand;
                    }
                }
                Telnet::SubCommand => {
                    self.telnet = if byte == SE {
                        Telnet::Data
                    } else {
                        Telnet::Sub
                    };
                }
            }
        }
        (consumed, found)
    }

    /// At the end of input: the last line, even without its terminator (`printf NONE | nc`).
    pub fn finish_eof(&mut self) -> Result<Option<Bytes>, LineError> {
        if self.line.is_empty() {
            Ok(None)
        } else {
            self.finish_line().map(Some)
        }
    }
}

impl Decoder for LineCodec {
    type Item = Bytes;
    type Error = LineError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, LineError> {
        let (consumed, found) = self.decode_slice(src);
        src.advance(consumed);
        found.transpose()
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, LineError> {
        if let Some(line) = self.decode(src)? {
            return Ok(Some(line));
        }
        self.finish_eof()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(codec: &mut LineCodec, input: &[u8]) -> Vec<Result<Vec<u8>, String>> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(line)) => out.push(Ok(line.to_vec())),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn lf_and_crlf_end_lines() {
        let mut c = LineCodec::new(64);
        assert_eq!(
            lines(&mut c, b"NONE\r\nPING\nx"),
            vec![Ok(b"NONE".to_vec()), Ok(b"PING".to_vec())]
        );
        assert_eq!(lines(&mut c, b"y\r\n"), vec![Ok(b"xy".to_vec())]);
    }

    #[test]
    fn a_line_split_across_many_reads_is_one_line() {
        let mut c = LineCodec::new(64);
        let mut buf = BytesMut::new();
        for &b in b"DISCONNECT\r" {
            buf.extend_from_slice(&[b]);
            assert!(c.decode(&mut buf).unwrap().is_none());
        }
        buf.extend_from_slice(b"\n");
        assert_eq!(c.decode(&mut buf).unwrap().unwrap(), "DISCONNECT");
    }

    #[test]
    fn telnet_commands_are_stripped() {
        let mut c = LineCodec::new(64);
        // IAC DO ECHO, IAC IP (Ctrl-C), IAC SB NAWS ... IAC SE, IAC IAC (literal 0xFF).
        let input = b"\xff\xfd\x01PI\xff\xf4NG\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0\r\n\xff\xffA\n";
        assert_eq!(
            lines(&mut c, input),
            vec![Ok(b"PING".to_vec()), Ok(b"\xffA".to_vec())]
        );
    }

    #[test]
    fn too_long_lines_fail_without_buffering_the_rest() {
        let mut c = LineCodec::new(8);
        assert_eq!(
            lines(&mut c, b"12345678\r\n"),
            vec![Ok(b"12345678".to_vec())]
        );
        let got = lines(&mut c, &[b'a'; 10_000]);
        assert_eq!(got, vec![Err("line longer than 8 bytes".to_string())]);
        assert!(c.line.len() <= 9);
    }

    #[test]
    fn nul_bytes_are_dropped_and_eof_flushes_a_partial_line() {
        let mut c = LineCodec::new(64);
        let mut buf = BytesMut::from(&b"NO\0NE"[..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        assert_eq!(c.decode_eof(&mut buf).unwrap().unwrap(), "NONE");
        assert!(c.decode_eof(&mut buf).unwrap().is_none());
    }
}
