//! TLS for the tests: self-signed certificates made with the real `openssl` binary, and a line
//! client (rustls) that accepts exactly one pinned certificate.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned,
};

use super::client::LINE_TIMEOUT;
use super::node::{run_with_timeout, Env, Node};

/// Writes a fresh self-signed EC certificate for `CN=<common_name>` to `dir/cert.pem` and
/// `dir/key.pem` (replacing what is there); returns the certificate's DER.
pub fn make_cert(dir: &Path, common_name: &str) -> Vec<u8> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (cert_tmp, key_tmp) = (dir.join("cert.pem.new"), dir.join("key.pem.new"));
    let out = run_with_timeout(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", &format!("/CN={common_name}")])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key_tmp)
            .arg("-out")
            .arg(&cert_tmp),
    );
    assert!(out.status.success(), "openssl req: {out:?}");
    // Renamed into place, so that a reload never sees half a file.
    std::fs::rename(&key_tmp, &key).unwrap();
    std::fs::rename(&cert_tmp, &cert).unwrap();
    der(&cert)
}

/// The DER of the first certificate in a PEM file.
pub fn der(pem: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(pem)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// Starts a node with a TLS listener on the certificate in `dir` (`make_cert`), `extra` flags
/// last; returns it and the TLS listener's address.
pub fn tls_node(env: &Env, dir: &Path, extra: &[&str]) -> (Node, SocketAddr) {
    let (cert, key) = (cert_path(dir), key_path(dir));
    let mut args = vec![
        "--tls-port",
        "0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let node = env.node("a", &args);
    let port = node.logged_port("listening (TLS)");
    (node, SocketAddr::from(([127, 0, 0, 1], port)))
}

pub fn cert_path(dir: &Path) -> PathBuf {
    dir.join("cert.pem")
}

pub fn key_path(dir: &Path) -> PathBuf {
    dir.join("key.pem")
}

/// Accepts the server's certificate only when it is `pinned` (byte for byte).
#[derive(Debug)]
struct Pinned {
    pinned: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A line client over TLS.
pub struct TlsClient {
    stream: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// Connects and completes the TLS handshake, accepting only the certificate `pinned`.
    pub fn connect(addr: SocketAddr, pinned: &[u8]) -> Result<TlsClient, String> {
        TlsClient::connect_after(addr, pinned, b"")
    }

    /// Like `connect`, sending `prefix` (a PROXY header) in the clear before the TLS handshake.
    pub fn connect_after(
        addr: SocketAddr,
        pinned: &[u8],
        prefix: &[u8],
    ) -> Result<TlsClient, String> {
        let provider = Arc::new(ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pinned: pinned.to_vec(),
                provider,
            }))
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(Arc::new(config), name).unwrap();
        let mut tcp =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        tcp.write_all(prefix).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(LINE_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(LINE_TIMEOUT)).unwrap();
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| e.to_string())?;
        }
        Ok(TlsClient {
            stream: BufReader::new(stream),
        })
    }

    /// The next line, without its CRLF.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.stream.read_line(&mut line).expect("TLS read");
        assert!(n > 0, "connection closed while a line was expected");
        assert!(line.ends_with("\r\n"), "not CRLF: {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    pub fn expect(&mut self, expected: &str) {
        assert_eq!(self.line(), expected);
    }

    pub fn send(&mut self, text: &str) {
        let stream = self.stream.get_mut();
        stream
            .write_all(format!("{text}\r\n").as_bytes())
            .expect("TLS write");
        stream.flush().unwrap();
    }
}
