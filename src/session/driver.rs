//! The session's select loop: read into the core's buffers, report what
//! happened, carry out the steps it returns, sleep until its deadline.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{net, Session};
use crate::data::{DataEvent, DataEventKind, DataFailure};
use crate::proto::session::{DataNews, Event, Step};

/// A TLS stream that ended without close_notify reads as `UnexpectedEof`;
/// on a control connection that is just the end of the stream.
fn eof_as_zero(r: std::io::Result<usize>) -> std::io::Result<usize> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
        r => r,
    }
}

/// What a data task's report means to the core.
fn news(ev: DataEvent) -> (u64, DataNews) {
    let n = match ev.kind {
        DataEventKind::Relaying => DataNews::Relaying,
        DataEventKind::DownDone { clean, .. } => DataNews::DownDone { clean },
        DataEventKind::Finished(out) => DataNews::Finished {
            stalled: out
                .error
                .as_ref()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut),
            error: out.error.map(|e| e.to_string()),
        },
        DataEventKind::Failed(f) => DataNews::Failed {
            client_timeout: matches!(f, DataFailure::ClientTimeout),
            why: format!("{f:?}"),
        },
    };
    (ev.gen, n)
}

impl Session {
    /// Runs the session until the core closes it.
    pub(super) async fn run(&mut self) {
        // A timer enters tokio's timer wheel (under a lock) when first
        // polled and leaves it when dropped: made once per session, not
        // on every turn of the loop (about twenty per session), it moves
        // only when the core's deadline does.
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        // The shutdown and drain waits too: each registers a waiter with
        // its token (under the token's lock, shared by every session) when
        // first polled and takes it out when dropped. Boxed, not pinned
        // here: pinned in the session's future they would sit beside every
        // other await's state instead of sharing its room (0.25 KiB more
        // per idle session); on the heap they take their own size only,
        // and the select's state shrinks by as much.
        let mut shutdown = Box::pin(self.cancel.clone().cancelled_owned());
        let mut draining = Box::pin(self.shared.draining.clone().cancelled_owned());
        loop {
            while let Some(step) = self.ctl.next_step() {
                if let Step::Close { end, farewell } = step {
                    return Box::pin(self.close(end, farewell)).await;
                }
                if let Some(ev) = self.execute(step).await {
                    let now = self.now();
                    self.ctl.on_event(ev, now);
                }
            }
            self.observe_relayed();
            self.ctl.release_idle();
            self.legs.release_if_empty();
            let deadline = self.ctl.deadline().map(|d| self.started + d);
            if let Some(at) = deadline.filter(|&at| at != timer.deadline()) {
                timer.as_mut().reset(at);
            }
            let (wants_client, wants_backend) = (self.ctl.wants_client(), self.ctl.wants_backend());
            let (client_buf, backend_buf) = self.ctl.buffers();
            tokio::select! {
                () = shutdown.as_mut() => {
                    let now = self.now();
                    self.ctl.on_event(Event::Shutdown, now);
                }
                () = draining.as_mut(), if !self.drain_seen => {
                    self.drain_seen = true;
                    let now = self.now();
                    self.ctl.on_event(Event::Draining, now);
                }
                ev = super::next_data_event(&mut self.events) => match ev {
                    Some(ev) => {
                        if let DataEventKind::Finished(out) = &ev.kind {
                            debug!(session = self.id, gen = ev.gen, bytes_up = out.up, bytes_down = out.down, error = ?out.error.as_ref().map(|e| e.to_string()), "transfer finished");
                        }
                        let (gen, news) = news(ev);
                        let now = self.now();
                        self.ctl.on_event(Event::Data { gen, news }, now);
                    }
                    // No data task is left to report and every report has
                    // been read: the channel's memory goes back (the next
                    // transfer makes a new one). Checked here, not before
                    // the wait: the last task often drops its sender just
                    // after the session read its last report, and an idle
                    // session would keep the channel.
                    None => self.events = None,
                },
                // TLS peers often close without close_notify (after QUIT or
                // 421): that is an end of stream like any other.
                r = self.backend_rd.read_buf(backend_buf), if wants_backend => {
                    let now = self.now();
                    match eof_as_zero(r) {
                        Ok(0) => self.ctl.on_backend_closed(now),
                        Ok(_) => {
                            self.relayed_since.get_or_insert_with(Instant::now);
                            self.ctl.on_backend_data(now);
                        }
                        Err(e) => {
                            warn!(session = self.id, error = %crate::tls::describe_backend_handshake_error(&e), "backend control connection failed");
                            self.ctl.on_backend_closed(now);
                        }
                    }
                }
                r = self.client_rd.read_buf(client_buf), if wants_client => {
                    match eof_as_zero(r) {
                        Ok(0) => self.ctl.on_client_closed(None),
                        Ok(_) => {
                            if let Err(e) = self.drain_client_socket() {
                                self.ctl.on_client_closed(Some(e.to_string()));
                            } else {
                                let now = self.now();
                                self.ctl.on_client_data(now);
                            }
                        }
                        Err(e) => self.ctl.on_client_closed(Some(e.to_string())),
                    }
                }
                () = &mut timer, if deadline.is_some() => {
                    let now = self.now();
                    self.ctl.on_time(now);
                }
            }
        }
    }

    /// Reads what the socket still holds after a read returned.
    ///
    /// A read stops at the TCP urgent mark (the ABOR synch; Python's ftplib
    /// sends the whole `ABOR\r\n` as urgent data), and tokio takes a short
    /// read as "drained" and waits for the next readiness edge, which never
    /// comes for bytes already queued (its `try_read` trusts the same cached
    /// readiness). So read the socket directly until it would block.
    ///
    /// Only when the bytes read end inside a line: a read that stopped at
    /// the mark ends before the urgent byte (the last of what was sent
    /// urgently, or an IAC sequence), never with a line's LF; after a whole
    /// line, bytes still to come raise a new readiness edge. This saves a
    /// system call (a read that would block) per command.
    fn drain_client_socket(&mut self) -> std::io::Result<()> {
        if self.ctl.client_buffer().last() == Some(&b'\n') {
            return Ok(());
        }
        for _ in 0..16 {
            if self.ctl.client_buffered() > self.cfg.max_line_length * 2 {
                break;
            }
            // Inside TLS there is no urgent data to chase.
            let Some(plain) = self.client_rd.plain() else {
                break;
            };
            match net::read_nonblocking(plain.as_ref(), self.ctl.client_buffer()) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Carries out one step; some report back at once.
    async fn execute(&mut self, step: Step) -> Option<Event> {
        match step {
            Step::Reply(bytes) => {
                let bytes = match self.ctl.next_reply() {
                    None => bytes,
                    Some(more) => {
                        let mut all = bytes::BytesMut::from(&bytes[..]);
                        all.extend_from_slice(&more);
                        while let Some(more) = self.ctl.next_reply() {
                            all.extend_from_slice(&more);
                        }
                        all.freeze()
                    }
                };
                let w = &mut self.client_wr;
                if let Err(e) = async { w.write_all(&bytes).await.and(w.flush().await) }.await {
                    self.ctl.on_client_closed(Some(e.to_string()));
                }
                None
            }
            Step::Send(bytes) => {
                let w = &mut self.backend_wr;
                if async { w.write_all(&bytes).await.and(w.flush().await) }
                    .await
                    .is_err()
                {
                    let now = self.now();
                    self.ctl.on_backend_closed(now);
                }
                None
            }
            // The futures of rarer or larger steps are boxed: the session's
            // own future (held for its whole life, idle or not) is then
            // only as large as its select loop.
            Step::Route { user } => Some(Box::pin(self.route(user)).await),
            Step::Disconnect => {
                Box::pin(self.disconnect_backend()).await;
                None
            }
            Step::BackendTls => Some(Box::pin(self.backend_starttls()).await),
            Step::ClientTls => Some(Box::pin(self.client_starttls()).await),
            Step::ConnectBackendData { gen, addr } => {
                Some(Box::pin(self.connect_backend_data(gen, addr)).await)
            }
            Step::ListenBackendData { gen } => Some(Box::pin(self.listen_backend_data(gen)).await),
            Step::LeasePassive { gen, pasv } => Some(self.lease_passive(gen, pasv)),
            Step::PrepareActive { gen } => {
                self.prepare_active(gen);
                None
            }
            Step::ConnectClient { gen, target } => {
                Some(Box::pin(self.connect_client(gen, target)).await)
            }
            Step::Cancel { gen } => {
                self.cancel_data(gen);
                None
            }
            Step::Note(n) => {
                self.account(n);
                None
            }
            Step::Close { .. } => unreachable!("handled by run"),
        }
    }

    /// Reply latency: for replies passed straight through, the time from
    /// their arrival until they were written.
    fn observe_relayed(&mut self) {
        if let Some(since) = self.relayed_since.take() {
            let n = std::mem::take(&mut self.relayed);
            for _ in 0..n {
                self.shared
                    .metrics
                    .reply_latency_seconds
                    .observe(since.elapsed().as_secs_f64());
            }
        }
    }
}
