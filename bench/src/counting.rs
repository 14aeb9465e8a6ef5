//! Counting database round trips two ways: MariaDB's own `Questions` counter (statements, as
//! the server counts them, for every client of the server), and a pass-through TCP proxy that
//! reads the command byte of every packet the functions send (exact per client, and it also
//! sees COM_PING, which `Questions` leaves out).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sqlx::Connection;
use sqlx::mysql::MySqlConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const COM_QUIT: u8 = 0x01;
pub const COM_QUERY: u8 = 0x03;
pub const COM_PING: u8 = 0x0e;
pub const COM_STMT_PREPARE: u8 = 0x16;
pub const COM_STMT_EXECUTE: u8 = 0x17;
pub const COM_STMT_CLOSE: u8 = 0x19;

/// Client commands seen, by command byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commands(pub [u64; 256]);

impl Default for Commands {
    fn default() -> Self {
        Commands([0; 256])
    }
}

impl Commands {
    pub fn minus(&self, before: &Commands) -> Commands {
        let mut out = Commands::default();
        for (i, slot) in out.0.iter_mut().enumerate() {
            *slot = self.0[i].saturating_sub(before.0[i]);
        }
        out
    }

    /// Statements the server executes: text queries and prepared-statement executions.
    pub fn statements(&self) -> u64 {
        self.0[COM_QUERY as usize] + self.0[COM_STMT_EXECUTE as usize]
    }

    pub fn pings(&self) -> u64 {
        self.0[COM_PING as usize]
    }

    pub fn prepares(&self) -> u64 {
        self.0[COM_STMT_PREPARE as usize]
    }

    /// Every command the client waits on an answer for (COM_STMT_CLOSE and COM_QUIT get none).
    pub fn round_trips(&self) -> u64 {
        self.0
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u8 != COM_STMT_CLOSE && *i as u8 != COM_QUIT)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Splits the client side of a MySQL connection into packets and counts commands: a packet
/// with sequence id 0 starts a command, and its first payload byte names it. The handshake
/// answers (sequence 1 and up) are not commands.
#[derive(Debug, Default)]
pub struct PacketCounter {
    buf: Vec<u8>,
}

impl PacketCounter {
    /// Feeds bytes as they arrive; calls `seen` with each command byte.
    pub fn feed(&mut self, bytes: &[u8], mut seen: impl FnMut(u8)) {
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        while self.buf.len() >= at + 4 {
            let len =
                u32::from_le_bytes([self.buf[at], self.buf[at + 1], self.buf[at + 2], 0]) as usize;
            let seq = self.buf[at + 3];
            if self.buf.len() < at + 4 + len {
                break;
            }
            if seq == 0 && len > 0 {
                seen(self.buf[at + 4]);
            }
            at += 4 + len;
        }
        self.buf.drain(..at);
    }
}

/// A proxy in front of MariaDB that counts what its clients send.
pub struct CountingProxy {
    pub addr: SocketAddr,
    counts: Arc<Mutex<Commands>>,
}

impl CountingProxy {
    pub async fn start(upstream: SocketAddr) -> std::io::Result<CountingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counts: Arc<Mutex<Commands>> = Arc::default();
        let shared = counts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counts = shared.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        relay(client, server, counts).await;
                    }
                });
            }
        });
        Ok(CountingProxy { addr, counts })
    }

    pub fn snapshot(&self) -> Commands {
        self.counts.lock().map(|c| *c).unwrap_or_default()
    }
}

async fn relay(client: TcpStream, server: TcpStream, counts: Arc<Mutex<Commands>>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    let mut parser = PacketCounter::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Ok(mut c) = counts.lock() {
            parser.feed(&buf[..n], |cmd| c.0[cmd as usize] += 1);
        }
        if server_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = server_write.shutdown().await;
    let _ = down.await;
}

/// MariaDB's global `Questions` counter, read over the harness's own connection. Reading it
/// is itself a statement; `calibrate` measures what a pair of reads adds so it can be taken off.
pub struct Questions {
    conn: MySqlConnection,
    own_cost: u64,
}

impl Questions {
    pub async fn connect(url: &str) -> Result<Questions, sqlx::Error> {
        let conn = MySqlConnection::connect(url).await?;
        let mut q = Questions { conn, own_cost: 0 };
        q.calibrate().await?;
        Ok(q)
    }

    pub async fn read(&mut self) -> Result<u64, sqlx::Error> {
        let row: (String, String) = sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Questions'")
            .fetch_one(&mut self.conn)
            .await?;
        row.1
            .parse()
            .map_err(|e| sqlx::Error::Decode(format!("Questions = {:?}: {e}", row.1).into()))
    }

    /// The smallest delta of back-to-back reads: the harness's own share of every delta.
    async fn calibrate(&mut self) -> Result<(), sqlx::Error> {
        let mut best = u64::MAX;
        for _ in 0..5 {
            let a = self.read().await?;
            let b = self.read().await?;
            best = best.min(b.saturating_sub(a));
        }
        self.own_cost = best;
        Ok(())
    }

    pub fn own_cost(&self) -> u64 {
        self.own_cost
    }

    /// Statements run by everyone between two reads, without the harness's own.
    pub fn delta(&self, before: u64, after: u64) -> u64 {
        after.saturating_sub(before).saturating_sub(self.own_cost)
    }
}

pub fn command_name(cmd: u8) -> &'static str {
    match cmd {
        COM_QUIT => "QUIT",
        COM_QUERY => "QUERY",
        COM_PING => "PING",
        COM_STMT_PREPARE => "STMT_PREPARE",
        COM_STMT_EXECUTE => "STMT_EXECUTE",
        COM_STMT_CLOSE => "STMT_CLOSE",
        0x1a => "STMT_RESET",
        0x11 => "CHANGE_USER",
        0x1f => "RESET_CONNECTION",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut p = len.to_le_bytes()[..3].to_vec();
        p.push(seq);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn commands_are_packets_that_start_a_sequence() {
        let mut wire = packet(1, b"handshake response");
        wire.extend(packet(0, &[COM_QUERY, b'B', b'E', b'G', b'I', b'N']));
        wire.extend(packet(0, &[COM_STMT_EXECUTE, 1, 0, 0, 0]));
        wire.extend(packet(0, &[COM_PING]));
        let mut seen = Vec::new();
        PacketCounter::default().feed(&wire, |c| seen.push(c));
        assert_eq!(seen, vec![COM_QUERY, COM_STMT_EXECUTE, COM_PING]);
    }

    #[test]
    fn packets_split_across_reads_are_counted_once() {
        let wire = [packet(0, &[COM_QUERY, b'x']), packet(0, &[COM_PING])].concat();
        let mut counter = PacketCounter::default();
        let mut seen = Vec::new();
        for byte in &wire {
            counter.feed(std::slice::from_ref(byte), |c| seen.push(c));
        }
        assert_eq!(seen, vec![COM_QUERY, COM_PING]);
    }

    #[test]
    fn round_trips_leave_out_commands_without_an_answer() {
        let mut c = Commands::default();
        c.0[COM_QUERY as usize] = 2;
        c.0[COM_STMT_EXECUTE as usize] = 3;
        c.0[COM_PING as usize] = 2;
        c.0[COM_STMT_CLOSE as usize] = 1;
        assert_eq!(c.statements(), 5);
        assert_eq!(c.round_trips(), 7);
        let before = Commands::default();
        assert_eq!(c.minus(&before), c);
    }
}
