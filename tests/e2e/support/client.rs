//! A small typed telnet-style test client: raw lines over a real TCP socket, every read bounded.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a test waits for a line it expects.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub struct TestClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// Bytes of a line whose end has not arrived yet (kept across `try_line` timeouts).
    partial: Vec<u8>,
}

impl TestClient {
    pub fn connect(addr: SocketAddr) -> TestClient {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        TestClient::from_stream(stream)
    }

    /// Connects from source address `from` (any 127.x.y.z works on Linux loopback), so that tests
    /// can look like different hosts.
    pub fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> TestClient {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::new(from, 0).into())
            .expect("bind source");
        socket
            .connect_timeout(&addr.into(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {addr} from {from}: {e}"));
        TestClient::from_stream(socket.into())
    }

    /// Wraps an already connected stream.
    pub fn from_stream(stream: TcpStream) -> TestClient {
        stream.set_read_timeout(Some(LINE_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(LINE_TIMEOUT)).unwrap();
        TestClient {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            partial: Vec::new(),
        }
    }

    /// Like `connect`, but `None` when the node cannot be reached.
    pub fn try_connect(addr: SocketAddr) -> Option<TestClient> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        Some(TestClient::from_stream(stream))
    }

    /// The next line within `wait`: `Ok(None)` on timeout (a partial line is kept for the next
    /// call), `Err` when the connection closed or failed.
    pub fn try_line(&mut self, wait: Duration) -> Result<Option<String>, String> {
        self.writer.set_read_timeout(Some(wait)).unwrap();
        let got = self.reader.read_until(b'\n', &mut self.partial);
        self.writer.set_read_timeout(Some(LINE_TIMEOUT)).unwrap();
        match got {
            Ok(0) => Err("closed".into()),
            Ok(_) if self.partial.ends_with(b"\n") => {
                let mut line = std::mem::take(&mut self.partial);
                if !line.ends_with(b"\r\n") {
                    return Err(format!("not CRLF: {:?}", String::from_utf8_lossy(&line)));
                }
                line.truncate(line.len() - 2);
                String::from_utf8(line).map(Some).map_err(|e| e.to_string())
            }
            Ok(_) => Err("closed mid-line".into()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sends a line, reporting failure instead of panicking.
    pub fn try_send(&mut self, text: &str) -> bool {
        self.writer
            .write_all(format!("{text}\r\n").as_bytes())
            .is_ok()
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// Sends `text` followed by CRLF.
    pub fn send(&mut self, text: &str) {
        self.send_raw(format!("{text}\r\n").as_bytes());
    }

    /// The next line, which must end in CRLF; returned without it.
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => panic!("connection closed while a line was expected"),
            Ok(_) => {}
            Err(e) => panic!(
                "no line within {LINE_TIMEOUT:?} ({e}); partial: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
        assert!(
            buf.ends_with(b"\r\n"),
            "line not CRLF-terminated: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).expect("utf-8 line")
    }

    /// Asserts the next line is exactly `expected`.
    pub fn expect(&mut self, expected: &str) {
        assert_eq!(self.line(), expected);
    }

    /// Answers `NONE`; returns the new id.
    pub fn register(&mut self) -> String {
        self.send("NONE");
        let line = self.line();
        let id = line
            .strip_prefix("SET_CLIENT_ID: ")
            .unwrap_or_else(|| panic!("expected SET_CLIENT_ID, got {line:?}"));
        id.to_string()
    }

    /// Answers `NONE ACK` (a new client in acknowledged mode); returns the new id.
    pub fn register_ack(&mut self) -> String {
        self.send("NONE ACK");
        let line = self.line();
        line.strip_prefix("SET_CLIENT_ID: ")
            .unwrap_or_else(|| panic!("expected SET_CLIENT_ID, got {line:?}"))
            .to_string()
    }

    /// Answers with an existing id and checks the node accepted it.
    pub fn resume(&mut self, id: &str) {
        self.send(id);
        self.expect(&format!("SET_CLIENT_ID: {id}"));
    }

    /// Answers with an existing id in acknowledged mode and checks the node accepted it.
    pub fn resume_ack(&mut self, id: &str) {
        self.send(&format!("{id} ACK"));
        self.expect(&format!("SET_CLIENT_ID: {id}"));
    }

    /// Sends `DISCONNECT` and checks the goodbye.
    pub fn disconnect(&mut self) {
        self.send("DISCONNECT");
        self.expect("BYE: disconnected");
    }

    /// The next `n` lines, each of which must be a `MESSAGE:`; returns their texts.
    pub fn messages(&mut self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let line = self.line();
                line.strip_prefix("MESSAGE: ")
                    .unwrap_or_else(|| panic!("expected MESSAGE, got {line:?}"))
                    .to_string()
            })
            .collect()
    }

    /// Asserts that nothing arrives for `quiet` (the connection stays open and silent).
    pub fn expect_silence(&mut self, quiet: Duration) {
        self.writer.set_read_timeout(Some(quiet)).unwrap();
        let mut byte = [0u8; 1];
        let got = self.reader.read(&mut byte);
        self.writer.set_read_timeout(Some(LINE_TIMEOUT)).unwrap();
        match got {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Ok(0) => panic!("connection closed; expected it open and silent"),
            Ok(_) => panic!("unexpected data: {:?}", byte[0] as char),
            Err(e) => panic!("read error: {e}"),
        }
    }

    /// Asserts the node closes the connection (EOF or reset) without sending anything more.
    pub fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(
                rest.is_empty(),
                "expected close, got {:?}",
                String::from_utf8_lossy(&rest)
            ),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the connection to close: {e}"),
        }
    }

    /// Shuts the sending side (a half-closed socket); reading still works.
    pub fn shutdown_write(&mut self) {
        self.writer.shutdown(std::net::Shutdown::Write).unwrap();
    }

    /// Stops reading but keeps the socket open (a client that stalls).
    pub fn into_stream(self) -> TcpStream {
        self.writer
    }
}
