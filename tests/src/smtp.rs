//! A real SMTP server for the tests (a sink): it speaks SMTP over TCP to the notification
//! service's lettre client, keeps what it receives, and can be told to refuse recipients for good
//! (550) or for now (451), or to go away and come back on the same port (an outage).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// One received message.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// The message as transmitted (headers and body, dot-unstuffed).
    pub data: String,
}

impl Received {
    /// A header's value (first occurrence, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push_str(line.trim_start());
                    continue;
                }
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_owned());
            }
        }
        value
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// Recipients containing one of these are refused: (pattern, permanent).
    refuse: Vec<(String, bool)>,
    /// RCPT TO attempts per recipient, refused or not.
    attempts: HashMap<String, usize>,
}

/// The sink.
pub struct SmtpSink {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    running: Mutex<Option<CancellationToken>>,
    /// Sessions accepted and not yet ended.
    open: Arc<AtomicUsize>,
}

/// Counts a session as open for as long as it lives.
struct OpenSession(Arc<AtomicUsize>);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(64)
}

impl SmtpSink {
    /// Starts on a free port.
    pub async fn start() -> Arc<SmtpSink> {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let sink = Arc::new(SmtpSink {
            addr: listener.local_addr().unwrap(),
            state: Arc::default(),
            running: Mutex::new(None),
            open: Arc::default(),
        });
        sink.serve(listener);
        sink
    }

    fn serve(&self, listener: TcpListener) {
        let token = CancellationToken::new();
        *self.running.lock().unwrap() = Some(token.clone());
        let (state, open) = (self.state.clone(), self.open.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = token.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((stream, _)) = accepted else { continue };
                let (state, token) = (state.clone(), token.clone());
                open.fetch_add(1, Ordering::SeqCst);
                let counted = OpenSession(open.clone());
                tokio::spawn(async move {
                    let _counted = counted;
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = session(stream, state) => {}
                    }
                });
            }
        });
    }

    /// `smtp://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Goes away: the port refuses connections and open sessions are dropped.
    pub fn stop(&self) {
        if let Some(t) = self.running.lock().unwrap().take() {
            t.cancel();
        }
    }

    /// Comes back on the same port.
    pub fn restart(&self) {
        self.stop();
        let listener = bind(self.addr).expect("rebind the sink's port");
        self.serve(listener);
    }

    /// Refuses recipients containing `pattern`: for good (550) or for now (451).
    pub fn refuse(&self, pattern: &str, permanent: bool) {
        self.state.lock().unwrap().refuse.push((pattern.to_owned(), permanent));
    }

    /// Accepts everyone again.
    pub fn accept_all(&self) {
        self.state.lock().unwrap().refuse.clear();
    }

    /// How many sessions are open: a client that died has none once the sink has read all it
    /// sent (a message whose last line was on its way when the client died is received then).
    pub fn open_sessions(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Every message received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Messages received for a recipient.
    pub fn received_by(&self, to: &str) -> Vec<Received> {
        self.received().into_iter().filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to))).collect()
    }

    /// How many times a recipient was offered (RCPT TO), accepted or not.
    pub fn attempts(&self, to: &str) -> usize {
        self.state.lock().unwrap().attempts.get(&to.to_ascii_lowercase()).copied().unwrap_or(0)
    }
}

fn address(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg.rfind('>').unwrap_or(arg.len());
    arg.get(start..end).unwrap_or("").to_ascii_lowercase()
}

async fn session(stream: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink.test ESMTP test sink\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            b"250 ok\r\n"
        } else if upper.starts_with("RSET") {
            from.clear();
            to.clear();
            b"250 ok\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&command[10..]);
            b"250 ok\r\n"
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = address(&command[8..]);
            let verdict = {
                let mut s = state.lock().unwrap();
                *s.attempts.entry(rcpt.clone()).or_default() += 1;
                s.refuse.iter().find(|(p, _)| rcpt.contains(p.as_str())).map(|(_, permanent)| *permanent)
            };
            match verdict {
                Some(true) => b"550 5.1.1 mailbox unavailable\r\n",
                Some(false) => b"451 4.3.0 try again later\r\n",
                None => {
                    to.push(rcpt);
                    b"250 ok\r\n"
                }
            }
        } else if upper == "DATA" {
            write.write_all(b"354 end with .\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').filter(|_| line.starts_with("..")).unwrap_or(&line));
            }
            state.lock().unwrap().received.push(Received { from: from.clone(), to: std::mem::take(&mut to), data });
            b"250 ok: queued\r\n"
        } else if upper.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"502 command not implemented\r\n"
        };
        write.write_all(reply).await?;
    }
}
