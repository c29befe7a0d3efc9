//! A chat test client: commands and their replies apart from the messages pushed meanwhile.

use std::collections::VecDeque;
use std::time::Duration;

use super::client::TestClient;
use super::node::Node;

/// A telnet-style client that speaks the chat commands. Lines pushed by the node (`MESSAGE`,
/// `NOTICE:`) that arrive while a reply is read are kept in `inbox`, in order.
pub struct Chatter {
    pub client: TestClient,
    pub id: String,
    pub inbox: VecDeque<String>,
}

/// Whether a line ends a command's reply.
fn ends_reply(line: &str) -> bool {
    line.starts_with("OK: ")
        || line.starts_with("ERROR: ")
        || line.starts_with("SENT ")
        || line == "PONG"
}

fn pushed(line: &str) -> bool {
    line.starts_with("MESSAGE") || line.starts_with("NOTICE: ") || line.starts_with("DROPPED ")
}

impl Chatter {
    /// A new client (`NONE`) on `node`.
    pub fn new(node: &Node) -> Chatter {
        let mut client = node.connect();
        let id = client.register();
        Chatter {
            client,
            id,
            inbox: VecDeque::new(),
        }
    }

    /// A new client on `node` that takes `name` with `password`.
    pub fn named(node: &Node, name: &str, password: &str) -> Chatter {
        let mut c = Chatter::new(node);
        c.ok(&format!("REGISTER {name} {password}"));
        c
    }

    /// Answers `GET_CLIENT_ID` with `hello` (an id, `LOGIN ...`, optionally ` ACK`) and expects
    /// `SET_CLIENT_ID`.
    pub fn hello(node: &Node, hello: &str) -> Chatter {
        let mut client = node.connect();
        client.send(hello);
        let line = client.line();
        let id = line
            .strip_prefix("SET_CLIENT_ID: ")
            .unwrap_or_else(|| panic!("{hello}: expected SET_CLIENT_ID, got {line:?}"))
            .to_string();
        Chatter {
            client,
            id,
            inbox: VecDeque::new(),
        }
    }

    /// Logs in on `node` as `name`.
    pub fn login(node: &Node, name: &str, password: &str) -> Chatter {
        Chatter::hello(node, &format!("LOGIN {name} {password}"))
    }

    /// Sends `line` and returns the reply's lines, the last of which ends it.
    pub fn cmd(&mut self, line: &str) -> Vec<String> {
        self.client.send(line);
        let mut reply = Vec::new();
        loop {
            let got = self.client.line();
            if pushed(&got) {
                self.inbox.push_back(got);
                continue;
            }
            let done = ends_reply(&got);
            reply.push(got);
            if done {
                return reply;
            }
        }
    }

    /// Sends `line`; the reply must end with `OK:`. Returns every line of it.
    pub fn ok(&mut self, line: &str) -> Vec<String> {
        let reply = self.cmd(line);
        assert!(
            reply.last().unwrap().starts_with("OK: "),
            "{line}: {reply:?}"
        );
        reply
    }

    /// Sends `line`; the reply must be one `ERROR:` line. Returns its text after `ERROR: `.
    pub fn err(&mut self, line: &str) -> String {
        let reply = self.cmd(line);
        assert_eq!(reply.len(), 1, "{line}: {reply:?}");
        reply[0]
            .strip_prefix("ERROR: ")
            .unwrap_or_else(|| panic!("{line}: expected an ERROR, got {reply:?}"))
            .to_string()
    }

    /// Sends a post (`SAY`/`SEND`); returns the message id of its `SENT` line.
    pub fn sent(&mut self, line: &str) -> u64 {
        let reply = self.cmd(line);
        assert_eq!(reply.len(), 1, "{line}: {reply:?}");
        reply[0]
            .strip_prefix("SENT ")
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("{line}: expected SENT <id>, got {reply:?}"))
    }

    /// The next pushed line (from the inbox, else the socket).
    pub fn pushed(&mut self) -> String {
        if let Some(line) = self.inbox.pop_front() {
            return line;
        }
        let line = self.client.line();
        assert!(pushed(&line), "expected a pushed line, got {line:?}");
        line
    }

    /// The next `n` `MESSAGE` lines, their text after `MESSAGE: ` (or `MESSAGE <id>: `).
    pub fn messages(&mut self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let line = self.pushed();
                let (_, text) = line
                    .split_once(": ")
                    .filter(|(head, _)| head.starts_with("MESSAGE"))
                    .unwrap_or_else(|| panic!("expected MESSAGE, got {line:?}"));
                text.to_string()
            })
            .collect()
    }

    /// Asserts nothing was pushed within `quiet`.
    pub fn quiet(&mut self, quiet: Duration) {
        assert!(self.inbox.is_empty(), "pushed: {:?}", self.inbox);
        self.client.expect_silence(quiet);
    }

    /// How others see this client when it has no name: `~<public id>`, from `WHOAMI`.
    pub fn public_id(&mut self) -> String {
        let reply = self.ok("WHOAMI");
        reply[0]
            .strip_prefix("OK: you are ")
            .and_then(|r| r.split(' ').next())
            .filter(|p| p.starts_with('~'))
            .unwrap_or_else(|| panic!("no public id in {reply:?}"))
            .to_string()
    }

    /// `DISCONNECT` and its goodbye (pushed lines before it are kept).
    pub fn disconnect(&mut self) {
        self.client.send("DISCONNECT");
        loop {
            let line = self.client.line();
            if pushed(&line) {
                self.inbox.push_back(line);
                continue;
            }
            assert_eq!(line, "BYE: disconnected");
            return;
        }
    }
}
