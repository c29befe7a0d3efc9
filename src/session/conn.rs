//! A client's connection: lines in through a stack buffer (an idle connection holds no read buffer), bytes out.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::codec::{LineCodec, LineError};

/// Bytes taken from the socket per read. On the stack of the read, never kept between reads.
const READ_CHUNK: usize = 4096;

/// A session's socket. Plain TCP tells when it is readable without reading, so an idle session
/// on it can park without a task ([`crate::park`]); TLS cannot (decrypted bytes may wait inside
/// its state), so a TLS session keeps its task.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {
    /// Whether `poll_readable` works (a session on this stream may park).
    const PARKS: bool = false;
    /// Registers `cx` for the socket becoming readable (or closed). A stream that cannot tell
    /// (`PARKS` false) answers ready, as if a line might be there.
    fn poll_readable(&self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

impl Stream for tokio::net::TcpStream {
    const PARKS: bool = true;
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_read_ready(cx).map(|_| ())
    }
}

impl Stream for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {}

/// One socket, unsplit: the session reads and writes it in turn, never at once.
pub struct Conn<S> {
    stream: S,
    codec: LineCodec,
    /// Bytes read past the end of a line (pipelined commands); empty, and unallocated, otherwise.
    leftover: BytesMut,
    /// The peer closed its side.
    eof: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(stream: S, max_line: usize) -> Conn<S> {
        Conn {
            stream,
            codec: LineCodec::new(max_line),
            leftover: BytesMut::new(),
            eof: false,
        }
    }

    /// The next line; `None` when the peer closed. Cancel-safe: bytes read stay in the codec.
    pub async fn next_line(&mut self) -> Option<Result<Bytes, LineError>> {
        poll_fn(|cx| self.poll_line(cx)).await
    }

    pub fn poll_line(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, LineError>>> {
        if !self.leftover.is_empty() {
            let (used, found) = self.codec.decode_slice(&self.leftover);
            if used == self.leftover.len() {
                self.leftover = BytesMut::new();
            } else {
                self.leftover.advance(used);
            }
            if let Some(found) = found {
                return Poll::Ready(Some(found));
            }
        }
        loop {
            if self.eof {
                return Poll::Ready(self.codec.finish_eof().transpose());
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(LineError::Io(e)))),
                Poll::Ready(Ok(())) => {}
            }
            let read = buf.filled();
            if read.is_empty() {
                self.eof = true;
                continue;
            }
            let (used, found) = self.codec.decode_slice(read);
            if let Some(found) = found {
                self.leftover.extend_from_slice(&read[used..]);
                return Poll::Ready(Some(found));
            }
        }
    }

    /// Whether the connection can be taken apart for a parked session: nothing read waits past a
    /// line end, and the peer has not closed.
    pub fn parks(&self) -> bool {
        self.leftover.is_empty() && !self.eof
    }

    /// The socket and the codec (with any partial line), for a parked session (see
    /// [`Conn::parks`]: the read-ahead and the end of file are not kept).
    pub fn into_parts(self) -> (S, LineCodec) {
        debug_assert!(self.parks());
        (self.stream, self.codec)
    }

    /// A connection again from [`Conn::into_parts`].
    pub fn from_parts(stream: S, codec: LineCodec) -> Conn<S> {
        Conn {
            stream,
            codec,
            leftover: BytesMut::new(),
            eof: false,
        }
    }

    /// Writes all of `bytes`.
    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Closes the writing side (the peer reads end of file).
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn lines_split_and_pipelined_come_out_one_by_one() {
        let (client, server) = tokio::io::duplex(64);
        let mut conn = Conn::new(server, 32);
        let mut client = client;
        client.write_all(b"ONE\r\nTW").await.unwrap();
        assert_eq!(conn.next_line().await.unwrap().unwrap(), "ONE");
        client.write_all(b"O\nTHREE\nFOUR").await.unwrap();
        assert_eq!(conn.next_line().await.unwrap().unwrap(), "TWO");
        assert_eq!(conn.next_line().await.unwrap().unwrap(), "THREE");
        drop(client);
        // The last line counts without its terminator; then the end.
        assert_eq!(conn.next_line().await.unwrap().unwrap(), "FOUR");
        assert!(conn.next_line().await.is_none());
        assert!(conn.next_line().await.is_none());
    }

    #[tokio::test]
    async fn a_line_past_the_bound_is_an_error() {
        let (mut client, server) = tokio::io::duplex(256);
        let mut conn = Conn::new(server, 8);
        client.write_all(b"0123456789ABCDEF\n").await.unwrap();
        assert!(matches!(
            conn.next_line().await,
            Some(Err(LineError::TooLong(8)))
        ));
    }
}
