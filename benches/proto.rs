//! Question: what does the control path cost per command, per reply and per
//! passive-port lease, and is any of it big enough to matter next to a
//! loopback round trip (tens of microseconds)?
//!
//! Benches: `parse_command` (framed lines clients really send), `rewrite_227`
//! (assemble a backend 227, find its data address, build the client's 227),
//! `reply_assemble` (ProFTPD's 17-line FEAT reply, one read), and
//! `port_pool_lease` (lease + drop on a 100-port pool shared by many client
//! addresses, empty and busy), and `session_core` (one command and its reply
//! through the control-session state machine: a NOOP relayed, and a whole
//! PASV + RETR + 226 exchange). Pure code only: no sockets, no runtime.
//!
//! Run: `cargo bench --bench proto` (about 25 s; CLI flags such as
//! `--measurement-time 10` override the short defaults below). Results are
//! recorded in docs/PERFORMANCE.md.

// criterion_group! generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ftpgate::data::port_pool::{Lease, PortPool};
use ftpgate::net::{BackendAddr, ClientAddr, PublicAddr};
use ftpgate::proto::command::parse_command;
use ftpgate::proto::reply::ReplyAssembler;
use ftpgate::proto::rewrite::{
    backend_data_addr, client_passive_reply, ClientPassive, PassiveCommand,
};
use ftpgate::proto::session::{BackendData, BackendTls, Control, DataNews, Event, Policy, Start};

/// ProFTPD 1.3.8's FEAT reply, as captured in fuzz/transcripts/.
const PROFTPD_FEAT: &[u8] = b"211-Features:\r\n CLNT\r\n CSID\r\n EPRT\r\n EPSV\r\n HOST\r\n LANG C.UTF-8*\r\n MDTM\r\n MFF modify;UNIX.group;UNIX.mode;\r\n MFMT\r\n MLST modify*;perm*;size*;type*;unique*;UNIX.group*;UNIX.groupname*;UNIX.mode*;UNIX.owner*;UNIX.ownername*;\r\n RANG STREAM\r\n REST STREAM\r\n SIZE\r\n TVFS\r\n UTF8\r\n211 End\r\n";

fn bench_parse_command(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_command");
    let lines: &[(&str, &[u8])] = &[
        ("retr_path", b"RETR pub/releases/ftpgate-0.1.0.tar.gz"),
        ("port_arg", b"PORT 192,168,1,5,195,80"),
        ("abor_telnet_synch", b"\xff\xf4\xff\xf2ABOR"),
        ("unknown_verb", b"SITE CHMOD 644 upload/file.bin"),
    ];
    for (name, line) in lines {
        g.throughput(Throughput::Bytes(line.len() as u64));
        g.bench_function(*name, |b| b.iter(|| parse_command(black_box(line))));
    }
    g.finish();
}

fn bench_rewrite_227(c: &mut Criterion) {
    let backend = BackendAddr("10.0.0.5:21".parse().unwrap());
    let public = PublicAddr::new("203.0.113.10".parse().unwrap());
    let wire: &[u8] = b"227 Entering Passive Mode (10,0,0,5,200,158).\r\n";
    c.bench_function("rewrite_227", |b| {
        b.iter(|| {
            let mut asm = ReplyAssembler::new(16 * 1024, 1024 * 1024);
            asm.push(black_box(wire));
            let reply = asm.next_reply().unwrap().unwrap();
            let data = backend_data_addr(&reply, PassiveCommand::Pasv, backend, false).unwrap();
            let out = client_passive_reply(ClientPassive::Pasv, public, 50001).unwrap();
            (data, out.to_bytes())
        })
    });
}

fn bench_reply_assemble(c: &mut Criterion) {
    let mut g = c.benchmark_group("reply_assemble");
    g.throughput(Throughput::Bytes(PROFTPD_FEAT.len() as u64));
    g.bench_function("proftpd_feat_17_lines", |b| {
        b.iter(|| {
            let mut asm = ReplyAssembler::new(16 * 1024, 1024 * 1024);
            asm.push(black_box(PROFTPD_FEAT));
            asm.next_reply().unwrap().unwrap()
        })
    });
    g.finish();
}

fn client_ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

fn bench_port_pool_lease(c: &mut Criterion) {
    let mut g = c.benchmark_group("port_pool_lease");
    // Lease and drop at once, rotating over 10,000 client addresses.
    let pool = PortPool::<u64>::new(50000, 50099, false);
    let mut i = 0u32;
    g.bench_function("empty_pool_10k_clients", |b| {
        b.iter(|| {
            i = (i + 1) % 10_000;
            drop(black_box(pool.lease(client_ip(i), 7)));
        })
    });
    // The same while 1,000 other clients hold 10 ports each (10,000 routes).
    let busy = PortPool::<u64>::new(50000, 50099, false);
    let held: Vec<Lease<u64>> = (0..10_000u32)
        .map(|k| busy.lease(client_ip(100_000 + k % 1000), 0).unwrap())
        .collect();
    g.bench_function("busy_pool_10k_routes_held", |b| {
        b.iter(|| {
            i = (i + 1) % 10_000;
            drop(black_box(busy.lease(client_ip(i), 7)));
        })
    });
    // One client already holding 99 of the 100 ports: random probes miss and
    // the full scan finds the last free port.
    let full = PortPool::<u64>::new(50000, 50099, false);
    let one = client_ip(42);
    let _held99: Vec<Lease<u64>> = (0..99).map(|_| full.lease(one, 0).unwrap()).collect();
    g.bench_function("one_client_99_of_100_held", |b| {
        b.iter(|| drop(black_box(full.lease(one, 7).unwrap())))
    });
    // A lease carrying the payload the server really stores, built per call.
    let real = PortPool::<tokio::sync::oneshot::Sender<SocketAddr>>::new(50000, 50099, false);
    g.bench_function("with_oneshot_payload", |b| {
        b.iter_batched(
            tokio::sync::oneshot::channel::<SocketAddr>,
            |(tx, rx)| {
                i = (i + 1) % 10_000;
                drop(black_box(real.lease(client_ip(i), tx)));
                rx
            },
            BatchSize::SmallInput,
        )
    });
    drop(held);
    g.finish();
}

fn session_policy() -> Policy {
    Policy {
        client: ClientAddr::new(SocketAddr::from(([192, 0, 2, 7], 40000))),
        active_mode: true,
        active_nat_fix: true,
        tls_offered: false,
        tls_required: false,
        implicit_tls: false,
        max_login_failures: 3,
        login_failures_before_delay: 1,
        login_failure_delay: Duration::from_secs(2),
        trust_backend_pasv_address: false,
        backend_data_networks: Default::default(),
        backend_data: BackendData::Passive,
        backend_protect_data: true,
        max_line_length: 512,
        greeting_timeout: Duration::from_secs(10),
        login_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(300),
        backend_reply_timeout: Duration::from_secs(10),
        cert_user: false,
        client_cert: None,
    }
}

/// Feeds `bytes` as if read from the client or the backend and takes every step.
fn feed(c: &mut Control, client: bool, bytes: &[u8]) -> usize {
    if client {
        c.client_buffer().extend_from_slice(bytes);
        c.on_client_data(Duration::ZERO);
    } else {
        c.backend_buffer().extend_from_slice(bytes);
        c.on_backend_data(Duration::ZERO);
    }
    let mut n = 0;
    while let Some(s) = c.next_step() {
        n += 1;
        black_box(s);
    }
    n
}

fn logged_in() -> Control {
    let backend = BackendAddr("10.0.0.5:21".parse().unwrap());
    let mut c = Control::new(
        session_policy(),
        Start::Connected {
            backend,
            tls: BackendTls::Off,
        },
    );
    feed(&mut c, false, b"220 hi\r\n");
    feed(&mut c, true, b"USER anonymous\r\n");
    feed(&mut c, false, b"230 in\r\n");
    c
}

fn bench_session_core(c: &mut Criterion) {
    let mut g = c.benchmark_group("session_core");
    let mut ctl = logged_in();
    g.bench_function("noop_relayed", |b| {
        b.iter(|| {
            feed(&mut ctl, true, b"NOOP\r\n");
            feed(&mut ctl, false, b"200 NOOP ok.\r\n")
        })
    });
    let mut ctl = logged_in();
    let public = PublicAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
    let mut gen = 0;
    g.bench_function("pasv_retr_226", |b| {
        b.iter(|| {
            gen += 1;
            feed(&mut ctl, true, b"PASV\r\n");
            feed(
                &mut ctl,
                false,
                b"227 Entering Passive Mode (10,0,0,5,4,1).\r\n",
            );
            ctl.on_event(Event::BackendDataConnected { gen }, Duration::ZERO);
            ctl.on_event(
                Event::Leased {
                    gen,
                    public,
                    port: 50000,
                },
                Duration::ZERO,
            );
            feed(&mut ctl, true, b"RETR f\r\n");
            feed(&mut ctl, false, b"150 here\r\n226 done\r\n");
            for news in [
                DataNews::Relaying,
                DataNews::DownDone { clean: true },
                DataNews::Finished {
                    error: None,
                    stalled: false,
                },
            ] {
                ctl.on_event(Event::Data { gen, news }, Duration::ZERO);
            }
            while let Some(s) = ctl.next_step() {
                black_box(s);
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // Short defaults so the whole run stays well under a minute.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(30)
        .without_plots();
    targets = bench_parse_command, bench_rewrite_227, bench_reply_assemble, bench_port_pool_lease, bench_session_core
}
criterion_main!(benches);
