//! Data connections: setting one up for PASV/EPSV/PORT/EPRT, and what the
//! data task's reports mean for the transfer.
//!
//! A data setup runs when every earlier reply is out, because ftpgate then
//! talks to the backend itself: the backend leg first (ftpgate's own
//! PASV/EPSV and a connect, or ftpgate's listener and its own PORT/EPRT,
//! which names only ftpgate's address), then the client leg (a leased
//! passive port shown in the 227/229, or the checked PORT target). One
//! overlap: with a passive backend and a passive client, the port is
//! leased and the 227/229 sent as soon as the backend's 227/229 is
//! checked, and ftpgate connects to the backend's data port behind that
//! reply; the client's next command waits for the connect. The driver
//! does the I/O of each step and reports back. No I/O here.

use std::time::Duration;

use super::super::reply::{Reply, ReplyCode};
use super::super::rewrite::{
    backend_active_command, backend_data_addr, backend_data_allowed, client_passive_reply,
    ClientPassive, PassiveCommand, PassiveReplyError,
};
use super::{
    BackendData, ClientLeg, Control, DataNews, DataWait, Event, Note, Own, Phase, Prepared, Step,
};
use crate::error::{Error, ErrorKind};

impl Control {
    /// A data-setup command's turn has come.
    pub(super) fn start_data(&mut self, leg: ClientLeg, now: Duration) {
        self.prepared_expired = false;
        if let Some(old) = self.prepared.take() {
            self.steps.push_back(Step::Cancel { gen: old.gen });
        }
        let gen = self.next_gen;
        self.next_gen += 1;
        let wait = match self.policy.backend_data {
            BackendData::Passive => {
                let cmd = self.passive_cmd;
                self.send_own(bytes::Bytes::from_static(cmd.line()));
                DataWait::ExpectPassiveReply {
                    cmd,
                    retried: false,
                }
            }
            BackendData::Active => {
                self.steps.push_back(Step::ListenBackendData { gen });
                DataWait::ExpectBackendListen
            }
        };
        self.own = Some(Box::new(Own::ExpectData {
            gen,
            leg,
            wait,
            since: now,
        }));
    }

    /// The backend answered ftpgate's own PASV/EPSV or PORT/EPRT.
    pub(super) fn on_data_setup_reply(&mut self, reply: Reply, now: Duration) {
        let Some(Own::ExpectData { gen, leg, wait, .. }) = self.own.as_deref().cloned() else {
            return;
        };
        let Some(backend) = self.backend else {
            return;
        };
        match wait {
            DataWait::ExpectPassiveReply { cmd, retried } => {
                match backend_data_addr(
                    &reply,
                    cmd,
                    backend,
                    self.policy.trust_backend_pasv_address,
                ) {
                    // A trusted 227 may name any address: only the backend's
                    // own and `backend_data_networks` are reached.
                    Ok(addr)
                        if !backend_data_allowed(
                            addr,
                            backend,
                            &self.policy.backend_data_networks,
                        ) =>
                    {
                        self.note(Note::BackendDataRefused { addr: addr.0 });
                        let e = Error::backend(ErrorKind::BackendDataAddress(addr.to_string()));
                        self.fail_data(gen, e);
                    }
                    Ok(addr) => {
                        self.passive_cmd = cmd;
                        match leg {
                            // The client's reply first, the connect behind
                            // it: the client reads its 227/229 while
                            // ftpgate connects (see on_data_setup_event).
                            ClientLeg::Passive(kind) => {
                                let wait = DataWait::ExpectLease {
                                    connect: Some(addr),
                                };
                                self.set_wait(gen, leg, wait, now);
                                self.steps.push_back(Step::LeasePassive {
                                    gen,
                                    pasv: kind == ClientPassive::Pasv,
                                });
                            }
                            ClientLeg::Active { .. } => {
                                self.set_wait(gen, leg, DataWait::ExpectBackendConnect, now);
                                self.steps.push_back(Step::ConnectBackendData { gen, addr });
                            }
                        }
                    }
                    Err(PassiveReplyError::Unsupported) if !retried && backend.0.is_ipv4() => {
                        // The other passive command may work (a server
                        // without EPSV, or without PASV).
                        let other = match cmd {
                            PassiveCommand::Pasv => PassiveCommand::Epsv,
                            PassiveCommand::Epsv => PassiveCommand::Pasv,
                        };
                        self.send_own(bytes::Bytes::from_static(other.line()));
                        let wait = DataWait::ExpectPassiveReply {
                            cmd: other,
                            retried: true,
                        };
                        self.set_wait(gen, leg, wait, now);
                    }
                    Err(_) => {
                        self.note(Note::DataSetupRefused {
                            text: reply.text_lossy(),
                        });
                        self.fail_data(
                            gen,
                            Error::backend(ErrorKind::BackendDataSetup(reply.text_lossy())),
                        );
                    }
                }
            }
            DataWait::ExpectPortReply if reply.is_success() => {
                self.backend_leg_ready(gen, leg, now)
            }
            DataWait::ExpectPortReply => {
                self.note(Note::DataSetupRefused {
                    text: reply.text_lossy(),
                });
                self.fail_data(
                    gen,
                    Error::backend(ErrorKind::BackendDataSetup(reply.text_lossy())),
                );
            }
            _ => {}
        }
    }

    fn set_wait(&mut self, gen: u64, leg: ClientLeg, wait: DataWait, since: Duration) {
        self.own = Some(Box::new(Own::ExpectData {
            gen,
            leg,
            wait,
            since,
        }));
    }

    /// The data setup failed: its legs are dropped and the client told why.
    fn fail_data(&mut self, gen: u64, e: Error) {
        self.own = None;
        self.steps.push_back(Step::Cancel { gen });
        self.local_error(e);
    }

    /// The backend leg is ready: now the client leg.
    fn backend_leg_ready(&mut self, gen: u64, leg: ClientLeg, now: Duration) {
        match leg {
            ClientLeg::Passive(kind) => {
                self.set_wait(gen, leg, DataWait::ExpectLease { connect: None }, now);
                self.steps.push_back(Step::LeasePassive {
                    gen,
                    pasv: kind == ClientPassive::Pasv,
                });
            }
            ClientLeg::Active { target, eprt } => {
                self.own = None;
                self.steps.push_back(Step::PrepareActive { gen });
                self.prepared = Some(Prepared {
                    gen,
                    active: Some(target),
                    relaying: false,
                });
                let text = if eprt {
                    "EPRT command successful."
                } else {
                    "PORT command successful."
                };
                self.local(Reply::new(ReplyCode::CommandOk, text));
            }
        }
    }

    /// The driver reports on a data-setup or transfer-start step.
    pub(super) fn on_data_setup_event(&mut self, ev: Event, now: Duration) {
        let own_gen = match self.own.as_deref() {
            Some(Own::ExpectData { gen, .. } | Own::ExpectClientConnect { gen, .. }) => Some(*gen),
            _ => None,
        };
        let gen = match &ev {
            Event::BackendDataConnected { gen }
            | Event::BackendDataListening { gen, .. }
            | Event::BackendDataFailed { gen, .. }
            | Event::Leased { gen, .. }
            | Event::LeaseFailed { gen, .. }
            | Event::ClientDataConnected { gen }
            | Event::ClientDataFailed { gen, .. } => *gen,
            _ => return,
        };
        if own_gen != Some(gen) {
            // A report for a setup already abandoned: drop what it holds.
            self.steps.push_back(Step::Cancel { gen });
            return;
        }
        let (leg, connect) = match self.own.as_deref() {
            Some(Own::ExpectData { leg, wait, .. }) => (
                Some(*leg),
                match wait {
                    DataWait::ExpectLease { connect } => *connect,
                    _ => None,
                },
            ),
            _ => (None, None),
        };
        // The client has its 227/229 already: the backend leg completes
        // (or fails) the prepared connection.
        let answered = self.prepared.as_ref().is_some_and(|p| p.gen == gen);
        match (ev, leg) {
            (Event::BackendDataConnected { .. }, Some(_)) if answered => self.own = None,
            (Event::BackendDataConnected { .. }, Some(leg)) => {
                self.backend_leg_ready(gen, leg, now)
            }
            (Event::BackendDataFailed { .. }, _) if answered => {
                // Unusable: the transfer command that follows gets 425
                // (the driver has logged why).
                self.own = None;
                self.prepared = None;
                self.prepared_expired = true;
                self.steps.push_back(Step::Cancel { gen });
            }
            (Event::BackendDataListening { addr, .. }, Some(leg)) => {
                // PORT/EPRT toward the backend names ftpgate's own listener,
                // never what the client sent.
                self.send_own(bytes::Bytes::from(backend_active_command(addr)));
                self.set_wait(gen, leg, DataWait::ExpectPortReply, now);
            }
            (Event::BackendDataFailed { error, .. }, _) => self.fail_data(gen, error),
            (Event::Leased { public, port, .. }, Some(ClientLeg::Passive(kind))) => {
                self.own = None;
                match client_passive_reply(kind, public, port) {
                    Some(reply) => {
                        self.prepared = Some(Prepared {
                            gen,
                            active: None,
                            relaying: false,
                        });
                        self.local(reply);
                        if let (Some(addr), Some(leg)) = (connect, leg) {
                            // The reply is written before the connect runs.
                            self.flush();
                            self.set_wait(gen, leg, DataWait::ExpectBackendConnect, now);
                            self.steps.push_back(Step::ConnectBackendData { gen, addr });
                        }
                    }
                    None => self.fail_data(gen, Error::client(ErrorKind::NoIpv4ForPasv)),
                }
            }
            (Event::LeaseFailed { error, .. }, _) => self.fail_data(gen, error),
            (Event::ClientDataConnected { .. }, None) => {
                if let Some(Own::ExpectClientConnect {
                    gen,
                    line,
                    arg,
                    kind,
                }) = self.own.take().map(|o| *o)
                {
                    self.begin_transfer(gen, true, kind, arg, &line, false);
                }
            }
            (Event::ClientDataFailed { error, .. }, None) => self.fail_data(gen, error),
            _ => {}
        }
    }

    /// A data task reports on `gen`.
    pub(super) fn on_data(&mut self, gen: u64, news: DataNews) {
        if let Some(p) = self.prepared.as_mut().filter(|p| p.gen == gen) {
            if news == DataNews::Relaying {
                p.relaying = true;
            }
            if let DataNews::Failed {
                client_timeout,
                why,
            } = news
            {
                // Unused and gone: a later transfer command gets 425.
                self.note(Note::DataFailed {
                    client_timeout,
                    why,
                });
                self.note(Note::DataExpired);
                self.prepared = None;
                self.prepared_expired = true;
                self.steps.push_back(Step::Cancel { gen });
            }
            return;
        }
        let Some(t) = self.transfer.as_mut().filter(|t| t.gen == gen) else {
            return;
        };
        let mut cut = None;
        match news {
            DataNews::Relaying => {
                if t.phase == Phase::Waiting {
                    t.phase = Phase::Running;
                }
            }
            DataNews::DownDone { clean } => {
                if matches!(t.phase, Phase::Waiting | Phase::Running) {
                    t.phase = Phase::DownDone { clean };
                }
            }
            DataNews::Finished { error, stalled } => {
                let down_clean = match t.phase {
                    Phase::DownDone { clean } => clean,
                    _ => false,
                };
                if matches!(
                    t.phase,
                    Phase::Waiting | Phase::Running | Phase::DownDone { .. }
                ) {
                    t.phase = Phase::Finished {
                        down_clean,
                        relay_error: error.is_some(),
                    };
                    if error.is_some() {
                        cut = Some((if stalled { "stalled" } else { "relay_error" }, error));
                    }
                }
            }
            DataNews::Failed {
                client_timeout,
                why,
            } => {
                if !t.over() {
                    t.phase = Phase::Failed;
                }
                self.note(Note::DataFailed {
                    client_timeout,
                    why,
                });
                self.steps.push_back(Step::Cancel { gen });
            }
        }
        if let Some((cause, error)) = cut {
            self.note(Note::TransferCut { cause, error });
        }
        let settled = self.transfer.as_ref().is_some_and(|t| t.settled());
        if settled && self.order.held_gen() == Some(gen) {
            self.release_held();
        }
        self.record_if_countable();
    }
}
