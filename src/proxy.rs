//! The PROXY protocol (v1 text, v2 binary) header a load balancer puts before a connection's bytes.
//!
//! Reads exactly the header, never a byte of what follows, so the client's own lines stay in the
//! socket for the session. Bounded: a v1 line is at most 107 bytes, a v2 header at most
//! `16 + MAX_V2_LEN`; the caller bounds the time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CRLF included (the specification's bound).
pub const MAX_V1_LEN: usize = 107;
/// Longest v2 address block (with TLVs) accepted; addresses take at most 216 bytes.
pub const MAX_V2_LEN: usize = 512;
/// Shortest v1 header (`PROXY UNKNOWN\r\n`): read at once, shorter than any v2 header.
const MIN_V1_LEN: usize = 15;

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// The client's real address (source of the proxied connection).
    Source(SocketAddr),
    /// No address (v1 `UNKNOWN`, v2 `LOCAL` such as a health check, or a non-IP family): use the
    /// socket's peer address.
    Unknown,
}

/// A missing or invalid header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("the connection closed before a complete PROXY header")]
    Truncated,
    #[error("no PROXY protocol header")]
    Missing,
    #[error("PROXY v1 header longer than {MAX_V1_LEN} bytes")]
    TooLong,
    #[error("malformed PROXY v1 header: {0}")]
    BadV1(&'static str),
    #[error("malformed PROXY v2 header: {0}")]
    BadV2(&'static str),
    #[error("read error: {0}")]
    Io(String),
}

/// Reads the PROXY header (v1 or v2) from the start of `stream`.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Proxied, ProxyError> {
    let mut head = [0u8; MIN_V1_LEN];
    // Byte by byte while the start still fits a signature: anything else is refused at once
    // instead of waiting for the rest of a header that will never come.
    for i in 0..MIN_V1_LEN {
        read_exact(stream, &mut head[i..=i]).await?;
        let fits = |signature: &[u8]| {
            let n = (i + 1).min(signature.len());
            head[..n] == signature[..n]
        };
        if !fits(b"PROXY ") && !fits(V2_SIGNATURE) {
            return Err(ProxyError::Missing);
        }
    }
    if head.starts_with(b"PROXY ") {
        let mut line = head.to_vec();
        // Byte by byte up to CRLF, so that nothing after the header is consumed.
        while !line.ends_with(b"\r\n") {
            if line.len() >= MAX_V1_LEN {
                return Err(ProxyError::TooLong);
            }
            let mut byte = [0u8; 1];
            read_exact(stream, &mut byte).await?;
            line.push(byte[0]);
        }
        return parse_v1(&line);
    }
    if head.starts_with(V2_SIGNATURE) {
        let mut rest = [0u8; 1];
        read_exact(stream, &mut rest).await?;
        let len = usize::from(u16::from_be_bytes([head[14], rest[0]]));
        if len > MAX_V2_LEN {
            return Err(ProxyError::BadV2("address block too long"));
        }
        let mut block = vec![0u8; len];
        read_exact(stream, &mut block).await?;
        return parse_v2(head[12], head[13], &block);
    }
    Err(ProxyError::Missing)
}

async fn read_exact<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
) -> Result<(), ProxyError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ProxyError::Truncated),
        Err(e) => Err(ProxyError::Io(e.to_string())),
    }
}

/// Parses a whole v1 line, CRLF included.
pub fn parse_v1(line: &[u8]) -> Result<Proxied, ProxyError> {
    if line.len() > MAX_V1_LEN {
        return Err(ProxyError::TooLong);
    }
    let text = line
        .strip_suffix(b"\r\n")
        .ok_or(ProxyError::BadV1("no CRLF"))?;
    let text = std::str::from_utf8(text).map_err(|_| ProxyError::BadV1("not ASCII"))?;
    let mut words = text.split(' ');
    if words.next() != Some("PROXY") {
        return Err(ProxyError::BadV1("does not start with PROXY"));
    }
    let family = words.next().ok_or(ProxyError::BadV1("no protocol"))?;
    if family == "UNKNOWN" {
        // The rest of the line is to be ignored.
        return Ok(Proxied::Unknown);
    }
    let fields: Vec<&str> = words.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::BadV1("expected 4 fields after the protocol"));
    };
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            IpAddr::V4(
                src.parse()
                    .map_err(|_| ProxyError::BadV1("bad IPv4 source"))?,
            ),
            IpAddr::V4(
                dst.parse()
                    .map_err(|_| ProxyError::BadV1("bad IPv4 destination"))?,
            ),
        ),
        "TCP6" => (
            IpAddr::V6(
                src.parse()
                    .map_err(|_| ProxyError::BadV1("bad IPv6 source"))?,
            ),
            IpAddr::V6(
                dst.parse()
                    .map_err(|_| ProxyError::BadV1("bad IPv6 destination"))?,
            ),
        ),
        _ => return Err(ProxyError::BadV1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let _ = dst;
    let port = |p: &str| -> Result<u16, ProxyError> {
        // Decimal without sign or leading zeros.
        if p.is_empty()
            || (p.len() > 1 && p.starts_with('0'))
            || !p.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ProxyError::BadV1("bad port"));
        }
        p.parse().map_err(|_| ProxyError::BadV1("bad port"))
    };
    let sport = port(sport)?;
    port(dport)?;
    Ok(Proxied::Source(SocketAddr::new(src, sport)))
}

/// Parses a v2 header from its version/command byte, family byte and address block.
pub fn parse_v2(ver_cmd: u8, family: u8, block: &[u8]) -> Result<Proxied, ProxyError> {
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::BadV2("version is not 2"));
    }
    match ver_cmd & 0x0f {
        0 => return Ok(Proxied::Unknown), // LOCAL: the proxy's own connection (health check)
        1 => {}
        _ => return Err(ProxyError::BadV2("unknown command")),
    }
    match family {
        // TCP over IPv4: src addr, dst addr, src port, dst port.
        0x11 => {
            let b: &[u8; 12] = block
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyError::BadV2("IPv4 address block too short"))?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let port = u16::from_be_bytes([b[8], b[9]]);
            Ok(Proxied::Source(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        // TCP over IPv6.
        0x21 => {
            let b: &[u8; 36] = block
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyError::BadV2("IPv6 address block too short"))?;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&b[..16]);
            let port = u16::from_be_bytes([b[32], b[33]]);
            Ok(Proxied::Source(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(ip)),
                port,
            )))
        }
        // UNSPEC, UDP, unix sockets: no TCP client address to take.
        0x00 | 0x12 | 0x22 | 0x31 | 0x32 => Ok(Proxied::Unknown),
        _ => Err(ProxyError::BadV2("unknown address family")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a header from `bytes`; returns it and what stayed unread.
    async fn read(bytes: &[u8]) -> (Result<Proxied, ProxyError>, Vec<u8>) {
        let mut stream = bytes;
        let header = read_header(&mut stream).await;
        (header, stream.to_vec())
    }

    fn source(addr: &str) -> Result<Proxied, ProxyError> {
        Ok(Proxied::Source(addr.parse().unwrap()))
    }

    fn v2(cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | cmd);
        out.push(family);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    #[tokio::test]
    async fn v1_tcp4_tcp6_and_unknown() {
        let (h, rest) = read(b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 8000\r\nNONE\r\n").await;
        assert_eq!(h, source("192.0.2.7:56324"));
        assert_eq!(rest, b"NONE\r\n");
        let (h, rest) = read(b"PROXY TCP6 2001:db8::1 ::1 4000 8000\r\n").await;
        assert_eq!(h, source("[2001:db8::1]:4000"));
        assert!(rest.is_empty());
        let (h, rest) = read(b"PROXY UNKNOWN\r\nPING\r\n").await;
        assert_eq!(h, Ok(Proxied::Unknown));
        assert_eq!(rest, b"PING\r\n");
        let (h, _) = read(b"PROXY UNKNOWN ffff:: ::1 1 2\r\n").await;
        assert_eq!(h, Ok(Proxied::Unknown));
    }

    #[tokio::test]
    async fn v1_bad_lines_are_refused() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 192.0.2.7 ::1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 80\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 080 80\r\n",
            b"PROXY TCP4  192.0.2.7 10.0.0.1 1 80\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 80\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 80\n\n",
        ] {
            let (h, _) = read(bad).await;
            assert!(
                matches!(h, Err(ProxyError::BadV1(_) | ProxyError::Truncated)),
                "{:?}: {h:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test]
    async fn v1_too_long_is_refused_after_107_bytes() {
        let mut line = b"PROXY TCP6 ".to_vec();
        line.extend(std::iter::repeat_n(b'1', 200));
        line.extend_from_slice(b"\r\n");
        let (h, rest) = read(&line).await;
        assert_eq!(h, Err(ProxyError::TooLong));
        assert_eq!(rest.len(), line.len() - MAX_V1_LEN, "read past the bound");
        assert_eq!(parse_v1(&line), Err(ProxyError::TooLong));
    }

    #[tokio::test]
    async fn v2_ipv4_ipv6_and_local() {
        let mut block = vec![192, 0, 2, 7, 10, 0, 0, 1];
        block.extend_from_slice(&56324u16.to_be_bytes());
        block.extend_from_slice(&8000u16.to_be_bytes());
        let mut bytes = v2(1, 0x11, &block);
        bytes.extend_from_slice(b"NONE\r\n");
        let (h, rest) = read(&bytes).await;
        assert_eq!(h, source("192.0.2.7:56324"));
        assert_eq!(rest, b"NONE\r\n");

        let mut block = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        block.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        block.extend_from_slice(&4000u16.to_be_bytes());
        block.extend_from_slice(&8000u16.to_be_bytes());
        // A TLV after the addresses is skipped.
        block.extend_from_slice(&[0x04, 0x00, 0x02, 0xaa, 0xbb]);
        let (h, rest) = read(&v2(1, 0x21, &block)).await;
        assert_eq!(h, source("[2001:db8::1]:4000"));
        assert!(rest.is_empty());

        let (h, _) = read(&v2(0, 0x00, &[])).await;
        assert_eq!(h, Ok(Proxied::Unknown));
    }

    #[tokio::test]
    async fn v2_bad_headers_are_refused() {
        // Address block shorter than the family needs.
        let (h, _) = read(&v2(1, 0x11, &[1, 2, 3])).await;
        assert!(matches!(h, Err(ProxyError::BadV2(_))), "{h:?}");
        // Length beyond the bound: refused before reading it.
        let mut big = v2(1, 0x11, &[]);
        big[14..16].copy_from_slice(&(MAX_V2_LEN as u16 + 1).to_be_bytes());
        let (h, _) = read(&big).await;
        assert!(matches!(h, Err(ProxyError::BadV2(_))), "{h:?}");
        // Wrong version, unknown command, unknown family.
        let mut bad = v2(1, 0x11, &[0; 12]);
        bad[12] = 0x11;
        assert!(matches!(read(&bad).await.0, Err(ProxyError::BadV2(_))));
        assert!(matches!(
            read(&v2(7, 0x11, &[0; 12])).await.0,
            Err(ProxyError::BadV2(_))
        ));
        assert!(matches!(
            read(&v2(1, 0x44, &[0; 12])).await.0,
            Err(ProxyError::BadV2(_))
        ));
    }

    #[tokio::test]
    async fn truncated_and_garbage() {
        assert_eq!(read(b"PROXY TCP4 1.2").await.0, Err(ProxyError::Truncated));
        assert_eq!(
            read(b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2").await.0,
            Err(ProxyError::Truncated)
        );
        let header = v2(1, 0x11, &[0; 12]);
        assert_eq!(read(&header[..20]).await.0, Err(ProxyError::Truncated));
        assert_eq!(read(b"").await.0, Err(ProxyError::Truncated));
        assert_eq!(
            read(b"NONE\r\nPING\r\nPING\r\n").await.0,
            Err(ProxyError::Missing)
        );
        assert_eq!(
            read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.0,
            Err(ProxyError::Missing)
        );
    }

    #[tokio::test]
    async fn a_start_that_fits_no_signature_is_refused_without_waiting_for_more() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = tokio::io::duplex(64);
        // Three bytes, and the connection stays open: no need to wait for fifteen.
        client.write_all(b"hi\r").await.unwrap();
        let header =
            tokio::time::timeout(std::time::Duration::from_secs(5), read_header(&mut server))
                .await
                .expect("refused at once");
        assert_eq!(header, Err(ProxyError::Missing));
        drop(client);
    }
}
