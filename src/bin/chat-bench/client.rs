//! A benchmark client over a real socket: handshake, reading messages (acknowledging them), registering many.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use chat::ClientId;

/// One benchmark client's connection: handshake done, lines to read.
pub struct Client {
    pub reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    pub writer: tokio::net::tcp::OwnedWriteHalf,
    pub id: ClientId,
}

impl Client {
    /// Connects and answers the handshake with `hello` (`NONE`, an id, optionally ` ACK`).
    pub async fn connect(addr: SocketAddr, hello: &str) -> Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, mut writer) = stream.into_split();
        let mut reader = BufReader::with_capacity(16 * 1024, read);
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        if line.trim_end() != "GET_CLIENT_ID" {
            bail!("unexpected greeting {line:?}");
        }
        writer.write_all(format!("{hello}\r\n").as_bytes()).await?;
        line.clear();
        reader.read_line(&mut line).await?;
        let id = line
            .trim_end()
            .strip_prefix("SET_CLIENT_ID: ")
            .ok_or_else(|| anyhow!("handshake refused: {line:?}"))?
            .parse()?;
        Ok(Client { reader, writer, id })
    }

    /// Reads `n` messages; in acknowledged mode answers each with `ACK`. Calls `seen` with each text.
    pub async fn take(&mut self, n: usize, ack: bool, mut seen: impl FnMut(&str)) -> Result<()> {
        let mut line = String::new();
        let mut acks = String::new();
        for _ in 0..n {
            line.clear();
            if self.reader.read_line(&mut line).await? == 0 {
                bail!("connection closed");
            }
            let rest = line
                .strip_prefix("MESSAGE")
                .ok_or_else(|| anyhow!("unexpected line {line:?}"))?;
            let (msg_id, text) = rest
                .split_once(": ")
                .ok_or_else(|| anyhow!("bad line {line:?}"))?;
            seen(text.trim_end());
            if ack {
                acks.push_str("ACK ");
                acks.push_str(msg_id.trim());
                acks.push_str("\r\n");
                // Acknowledge in small groups, as a real client reading a burst would.
                if self.reader.buffer().is_empty() {
                    self.writer.write_all(acks.as_bytes()).await?;
                    acks.clear();
                }
            }
        }
        if !acks.is_empty() {
            self.writer.write_all(acks.as_bytes()).await?;
        }
        Ok(())
    }
}

/// Creates `n` clients through the node, 200 handshakes at a time; returns their ids.
pub async fn register(addr: SocketAddr, n: usize) -> Result<Vec<ClientId>> {
    let gate = Arc::new(Semaphore::new(200));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire().await?;
                let mut c = Client::connect(addr, "NONE").await?;
                c.writer.write_all(b"DISCONNECT\r\n").await?;
                let mut rest = Vec::new();
                let _ = c.reader.read_to_end(&mut rest).await;
                Ok::<ClientId, anyhow::Error>(c.id)
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(n);
    for t in tasks {
        ids.push(t.await??);
    }
    Ok(ids)
}
