//! The simulated backend: what reaches it is checked (invariants 2, 3 and 7),
//! and it answers every line in order, one transfer at a time, tagging each
//! reply with the client command it answers.

use std::net::SocketAddr;

use bytes::Bytes;

use super::super::super::command::{parse_command, Verb};
use super::super::super::hostport::{parse_eprt_arg, parse_port_arg};
use super::{Sim, Source, TransferKind, Violation, THIRD_PARTY};

impl<S: Source> Sim<'_, S> {
    /// A line reaches the backend: checks, then the backend answers in turn.
    pub(super) fn backend_reads(&mut self, b: Bytes) -> Result<(), Violation> {
        let line = b.strip_suffix(b"\r\n").unwrap_or(&b).to_vec();
        let upper = line.to_ascii_uppercase();
        if self.quit_forwarded {
            return Err(self.fail(format!(
                "invariant 7: `{}` reached the backend after the client's QUIT",
                String::from_utf8_lossy(&line)
            )));
        }
        if upper.starts_with(b"PORT ") || upper.starts_with(b"EPRT ") {
            let text = String::from_utf8_lossy(&line).into_owned();
            let named = parse_port_arg(&line[5..])
                .map(SocketAddr::V4)
                .or_else(|_| parse_eprt_arg(&line[5..]));
            match named {
                Ok(a) if self.listen_addrs.contains(&a) => {}
                _ => {
                    return Err(self.fail(format!(
                        "invariant 2: `{text}` toward the backend names an address other than ftpgate's listener"
                    )))
                }
            }
        }
        if !self.backend.connected {
            return Ok(());
        }
        // Which client command is this (if any)?
        let own = matches!(
            upper.as_slice(),
            b"PASV" | b"EPSV" | b"AUTH TLS" | b"PBSZ 0" | b"PROT P" | b"PROT C"
        ) || upper.starts_with(b"PORT ")
            || upper.starts_with(b"EPRT ");
        let data_setup = matches!(upper.as_slice(), b"PASV" | b"EPSV")
            || upper.starts_with(b"PORT ")
            || upper.starts_with(b"EPRT ");
        if data_setup {
            self.setup_open = true;
        }
        if !own {
            if self.setup_open {
                return Err(self.fail(format!(
                    "invariant 7: the client's `{}` reached the backend during ftpgate's own data setup",
                    String::from_utf8_lossy(&line)
                )));
            }
            let prepared = self.prepared;
            let Some(c) = self
                .fifo
                .iter_mut()
                .find(|c| !c.forwarded && !c.discarded && c.line == line)
            else {
                return Err(self.fail(format!(
                    "the backend got `{}`, which no pending client command sent (or it was discarded after AUTH)",
                    String::from_utf8_lossy(&line)
                )));
            };
            c.forwarded = true;
            let verb = parse_command(&line).verb;
            self.quit_forwarded |= verb == Verb::Quit;
            if verb.is_transfer() {
                c.transfer = Some((prepared, TransferKind::of(verb)));
                if prepared.is_some() {
                    self.prepared = None;
                    self.stats.transfers += 1;
                }
            }
        }
        self.backend.inbox.push_back(line);
        self.serve_inbox();
        Ok(())
    }

    /// The backend answers what it can, in order.
    pub(super) fn serve_inbox(&mut self) {
        while let Some(line) = self.backend.inbox.front().cloned() {
            let upper = line.to_ascii_uppercase();
            if self.backend.busy.is_some() {
                if upper == b"ABOR" {
                    let k = self.backend.busy.take().unwrap_or_default();
                    self.backend
                        .outbox
                        .push_back(Bytes::from(format!("426 aborted #{k}\r\n")));
                    continue;
                }
                return;
            }
            self.backend.inbox.pop_front();
            let k = self
                .fifo
                .iter_mut()
                .find(|c| c.forwarded && !c.backend_answered && c.line == line)
                .map(|c| {
                    c.backend_answered = true;
                    c.idx
                });
            let tag = k.map(|k| format!(" #{k}")).unwrap_or_default();
            let verb = parse_command(&line).verb;
            let reply: String = match (upper.as_slice(), verb) {
                (b"PASV", _) => match self.src.pick(7) {
                    0 => "500 No PASV.".into(),
                    1 => "227 garbage".into(),
                    // Trusted, these name where ftpgate must not go (a
                    // foreign host), or may with 10.0.0.0/8 allowed.
                    2 => "227 Entering Passive Mode (203,0,113,66,4,1).".into(),
                    3 => "227 Entering Passive Mode (10,0,0,77,4,1).".into(),
                    _ => "227 Entering Passive Mode (10,0,0,5,4,1).".into(),
                },
                (b"EPSV", _) => match self.src.pick(4) {
                    0 => "500 No EPSV.".into(),
                    _ => "229 Entering Extended Passive Mode (|||1025|)".into(),
                },
                (b"AUTH TLS", _) => match self.src.pick(10) {
                    0 => "500 No TLS.".into(),
                    1 => "234 go\r\n200 injected".into(),
                    _ => "234 Proceed.".into(),
                },
                (b"PBSZ 0" | b"PROT P" | b"PROT C", _) => "200 ok".into(),
                (_, Verb::Port | Verb::Eprt) => {
                    if self.src.pick(5) == 0 {
                        "500 no".into()
                    } else {
                        "200 ok".into()
                    }
                }
                (_, Verb::User) => match self.src.pick(3) {
                    0 => format!("230 in{tag}"),
                    1 => format!("530 no{tag}"),
                    _ => format!("331 pass{tag}"),
                },
                (_, Verb::Pass) => match self.src.pick(3) {
                    0 => format!("530 no{tag}"),
                    _ => format!("230 in{tag}"),
                },
                (_, v) if v.is_transfer() => match self.src.pick(5) {
                    0 => format!("550 no such file{tag}"),
                    _ => {
                        self.backend.busy = k;
                        format!("150 opening{tag}")
                    }
                },
                (_, Verb::Quit) => {
                    self.backend.closing = true;
                    format!("221 bye{tag}")
                }
                (_, Verb::Abor) => format!("225 no transfer{tag}"),
                (_, Verb::Feat) => "211 End".into(),
                _ => match self.src.pick(12) {
                    0 => format!("227 Entering Passive Mode ({THIRD_PARTY},1,1){tag}"),
                    1 => format!("500 what{tag}"),
                    _ => format!("200 ok{tag}"),
                },
            };
            self.backend
                .outbox
                .push_back(Bytes::from(format!("{reply}\r\n")));
        }
    }
}
