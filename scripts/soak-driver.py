#!/usr/bin/env python3
"""Soak driver for scripts/soak.sh: two vsftpd, one ftpgate, clients and faults.

Started by scripts/soak.sh (which builds ftpgate and prepares the work
directory); not meant to be run alone. Loopback only. It starts and owns every
process of the run, each in a process group of its own, kills them by process
group id at the end (and on SIGTERM/SIGINT), and lists their ids in WORK/pids
so the shell script can kill them too if this driver dies.

For SECONDS it runs CLIENTS client threads through ftpgate, each doing
sessions of mixed uploads and downloads of random files (0 B to a few MiB)
in PASV, EPSV, PORT and EPRT, every transfer checked by SHA-256: a download
against the source file, an upload against the file on the backends' disk
(both vsftpd share one root). Alongside, fault threads:
  - kill a backend (SIGKILL to vsftpd and its session processes) every
    KILL_EVERY seconds, restart it 1 to 5 s later;
  - exhaust the passive range every BURST_EVERY seconds: range size + 4
    sessions each send PASV and never connect, held 3 s;
  - rewrite the config (backend weights 1:1 or 2:1) and SIGHUP ftpgate every
    RELOAD_EVERY seconds;
  - and the clients abort about ABORT_SHARE of their transfers on purpose,
    half by ABOR, half by resetting the data connection.
At the end, SIGTERM to ftpgate while transfers are in flight; clients finish
what they are doing but start nothing new.

Counted per transfer: ok (2xx, right bytes), failed (4xx/5xx reply or a
connection error), and BAD: a 2xx with wrong bytes (download: hash or length;
upload: the backend's file). Deliberately aborted transfers are counted
apart: their bytes are incomplete by design.
"""

import argparse
import ftplib
import hashlib
import json
import math
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

IO_TIMEOUT = 60  # seconds for any one socket operation


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sha256(b):
    return hashlib.sha256(b).hexdigest()


# === processes ===============================================================


def pids_running(marker):
    """Processes whose command line names marker (a file in the work
    directory): vsftpd's session processes are forks of the listener with its
    command line, in sessions of their own (setsid), so a process group kill
    misses them."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if marker.encode() in f.read().split(b"\0"):
                    found.append(int(d))
        except OSError:
            pass
    return found


class Procs:
    """Every process this driver started: by process group id, and by the
    config file on their command line for the ones that leave the group."""

    def __init__(self, work):
        self.work = work
        self.lock = threading.Lock()
        self.live = {}  # name -> (Popen, marker)

    def start(self, name, argv, logfile):
        with self.lock:
            out = open(logfile, "ab")
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
            out.close()
            self.live[name] = (p, argv[-1])
            self._write_pids()
            return p

    def kill(self, name, sig=signal.SIGKILL):
        with self.lock:
            p, marker = self.live.pop(name, (None, None))
            self._write_pids()
        if p is None:
            return None
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        if sig == signal.SIGKILL:
            for pid in pids_running(marker):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            return p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            return p.wait(timeout=10)

    def _write_pids(self):
        with open(os.path.join(self.work, "pids"), "w") as f:
            for p, _ in self.live.values():
                f.write(f"{p.pid}\n")

    def kill_all(self):
        for name in list(self.live):
            self.kill(name)


def port_free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def free_range(n):
    # Below Linux's ephemeral range (32768-60999), where vsftpd's passive
    # ports and outgoing connections live.
    for _ in range(100):
        first = random.randrange(10000, 30000)
        if all(port_free(p) for p in range(first, first + n)):
            return first, first + n - 1
    raise SystemExit("no free passive range found")


def wait_greeting(port, proc, name, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(3) == b"220":
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not greet on port {port}")


# === the rig =================================================================


class Rig:
    def __init__(self, args):
        self.a = args
        self.work = args.work
        self.procs = Procs(self.work)
        self.root = os.path.join(self.work, "root")
        self.vports = [free_port(), free_port()]
        self.gport = free_port()
        self.admin = free_port()
        self.pasv = free_range(args.passive_ports)
        self.conf = os.path.join(self.work, "ftpgate.toml")
        self.gate_log = os.path.join(self.work, "ftpgate.log")
        self.weights = 1

    def vsftpd_conf(self, i):
        path = os.path.join(self.work, f"vsftpd{i}.conf")
        empty = os.path.join(self.work, "empty")
        os.makedirs(empty, exist_ok=True)
        os.chmod(empty, 0o755)
        with open(path, "w") as f:
            f.write(f"""listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={self.vports[i]}
background=NO
anonymous_enable=YES
local_enable=NO
anon_root={self.root}
write_enable=YES
anon_upload_enable=YES
anon_other_write_enable=YES
anon_umask=022
anon_world_readable_only=NO
secure_chroot_dir={empty}
xferlog_enable=NO
isolate=NO
isolate_network=NO
seccomp_sandbox=NO
""")
        os.chmod(path, 0o600)
        return path

    def start_backend(self, i):
        p = self.procs.start(f"vsftpd{i}", [self.a.vsftpd, self.vsftpd_conf(i)],
                             os.path.join(self.work, f"vsftpd{i}.log"))
        wait_greeting(self.vports[i], p, f"vsftpd{i}")

    def write_config(self):
        b = [f"127.0.0.1:{p}" for p in self.vports]
        text = f"""listen = ["127.0.0.1:{self.gport}"]
backends = ["{b[0]}", "{b[1]}"]
public_address = "127.0.0.1"
passive_ports = "{self.pasv[0]}-{self.pasv[1]}"
admin_listen = "127.0.0.1:{self.admin}"
health_check_interval = "1s"
pending_data_timeout = "10s"
shutdown_drain_timeout = "{self.a.drain_seconds}s"
max_sessions_per_client = 1000
max_connection_rate_per_client = 1000

[backend_weights]
"{b[0]}" = {self.weights}
"{b[1]}" = 1
"""
        tmp = self.conf + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.conf)

    def start_gate(self):
        self.write_config()
        self.gate = self.procs.start("ftpgate", [self.a.ftpgate, "--config", self.conf],
                                     self.gate_log)
        wait_greeting(self.gport, self.gate, "ftpgate")

    def metrics(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=10) as r:
                return r.read().decode()
        except OSError as e:
            return f"# unavailable: {e}\n"


# === files ===================================================================


def make_files(root, n, max_bytes):
    """Random files: 0 and 1 byte, then half log-uniform from 2 KiB to
    max_bytes (many small ones), half uniform from max_bytes / 8 (large ones,
    so faults hit transfers in the middle)."""
    d = os.path.join(root, "files")
    os.makedirs(d, exist_ok=True)
    sizes = [0, 1]
    for i in range(max(n - 2, 1)):
        if i % 2:
            sizes.append(random.randint(max_bytes // 8, max_bytes))
        else:
            sizes.append(int(math.exp(random.uniform(math.log(2048), math.log(max_bytes)))))
    files = {}
    for i, size in enumerate(sizes):
        data = os.urandom(size)
        name = f"f{i:03d}-{size}.bin"
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        os.chmod(os.path.join(d, name), 0o644)
        files[name] = (size, sha256(data))
    return files


# === counting ================================================================


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}
        self.bad = []

    def add(self, key, n=1):
        with self.lock:
            self.c[key] = self.c.get(key, 0) + n

    def get(self, key):
        with self.lock:
            return self.c.get(key, 0)

    def bad_transfer(self, what):
        with self.lock:
            self.c["bad"] = self.c.get("bad", 0) + 1
            self.bad.append(what)
        log(f"BAD: 2xx with wrong bytes: {what}")


# === one client ==============================================================


class Aborted(Exception):
    pass


def code_of(exc):
    s = str(exc)
    return s[:3] if s[:3].isdigit() else "?"


def resync(ftp):
    """After an abort: NOOP, read replies until its 200 (at most 4)."""
    ftp.putcmd("NOOP")
    for _ in range(4):
        r = ftp.getmultiline()
        if r.startswith("200"):
            return True
    return False


def reset_close(sock):
    # SO_LINGER 0: close sends a TCP reset, not a FIN.
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def open_data(ftp, mode, cmd):
    """Like ftplib's ntransfercmd, with PASV, EPSV, PORT or EPRT chosen."""
    if mode in ("PASV", "EPSV"):
        if mode == "PASV":
            host, port = ftplib.parse227(ftp.sendcmd("PASV"))  # the 227's address, as given
        else:
            host, port = ftplib.parse229(ftp.sendcmd("EPSV"), ftp.sock.getpeername())
        conn = socket.create_connection((host, port), timeout=IO_TIMEOUT)
        try:
            resp = ftp.sendcmd(cmd)
            if resp[0] == "2":
                resp = ftp.getresp()
            if resp[0] != "1":
                raise ftplib.error_reply(resp)
        except BaseException:
            conn.close()
            raise
        return conn
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        lsock.settimeout(IO_TIMEOUT)
        port = lsock.getsockname()[1]
        if mode == "PORT":
            ftp.sendport("127.0.0.1", port)
        else:
            ftp.sendeprt("127.0.0.1", port)
        resp = ftp.sendcmd(cmd)
        if resp[0] == "2":
            resp = ftp.getresp()
        if resp[0] != "1":
            raise ftplib.error_reply(resp)
        conn, _ = lsock.accept()
        conn.settimeout(IO_TIMEOUT)
        return conn


class Client(threading.Thread):
    def __init__(self, n, rig, files, stats, stop, drain, args):
        super().__init__(daemon=True, name=f"client{n}")
        self.n = n
        self.rig = rig
        self.files = files
        self.names = sorted(files)
        self.stats = stats
        self.stop = stop      # set: stop at once (end of the run)
        self.drain = drain    # set: start no new transfer (SIGTERM sent)
        self.a = args
        self.rnd = random.Random(args.seed * 1000 + n)
        self.seq = 0
        self.in_flight = False
        self.aborting = False  # set once a deliberate abort has begun

    def run(self):
        while not self.stop.is_set() and not self.drain.is_set():
            try:
                self.session()
            except (ftplib.Error, OSError, EOFError) as e:
                self.stats.add("session_errors")
                if self.a.verbose:
                    log(f"client{self.n}: session: {e!r}")
                self.stop.wait(0.2)

    def session(self):
        ftp = ftplib.FTP(timeout=IO_TIMEOUT)
        try:
            ftp.connect("127.0.0.1", self.rig.gport)
            ftp.login()
            ftp.voidcmd("TYPE I")
            self.stats.add("sessions")
            for _ in range(self.rnd.randint(1, 6)):
                if self.stop.is_set() or self.drain.is_set():
                    break
                if not self.transfer(ftp):
                    return  # the session is gone or out of step
            try:
                ftp.quit()
            except (ftplib.Error, OSError, EOFError):
                pass
        finally:
            ftp.close()

    def transfer(self, ftp):
        """One transfer, counted. Returns False if the session is unusable."""
        mode = self.rnd.choice(["PASV", "PASV", "EPSV", "EPSV", "PORT", "EPRT"])
        upload = self.rnd.random() < 0.45
        abort = None
        if self.rnd.random() < self.a.abort_share:
            abort = self.rnd.choice(["ABOR", "reset"])
        kind = f"{'STOR' if upload else 'RETR'} {mode}"
        self.stats.add("attempted")
        self.in_flight = True
        self.aborting = False
        drained = self.drain.is_set
        try:
            if upload:
                outcome = self.upload(ftp, mode, abort)
            else:
                outcome = self.download(ftp, mode, abort)
        except (ftplib.error_temp, ftplib.error_perm, ftplib.error_reply) as e:
            outcome = ("failed_reply", code_of(e))
        except (OSError, EOFError, ftplib.error_proto) as e:
            outcome = ("failed_conn", type(e).__name__)
        finally:
            self.in_flight = False
        result, detail = outcome
        # A transfer that failed before its abort point is an ordinary failure.
        tag = "aborted" if self.aborting else "plain"
        self.stats.add(f"{tag}:{result}")
        self.stats.add(f"{tag}:{result}:{detail}")
        if drained():
            self.stats.add(f"during_drain:{result}")
        if self.a.verbose and result != "ok":
            log(f"client{self.n}: {kind} abort={abort}: {result} {detail}")
        if result.startswith("failed"):
            # Back off a little: an exhausted passive range answers at once.
            self.stop.wait(self.rnd.uniform(0.2, 0.5))
        return result in ("ok", "failed_reply", "aborted_ok")

    def download(self, ftp, mode, abort):
        name = self.rnd.choice(self.names)
        size, want = self.files[name]
        conn = open_data(ftp, mode, f"RETR files/{name}")
        h = hashlib.sha256()
        got = 0
        data_error = None
        cut_at = self.rnd.randint(0, max(size - 1, 0)) if abort else None
        try:
            while True:
                if abort and got >= cut_at:
                    break
                chunk = conn.recv(65536)
                if not chunk:
                    break
                h.update(chunk)
                got += len(chunk)
        except OSError as e:
            data_error = e
        if abort:
            return self.finish_abort(ftp, conn, abort, "download")
        conn.close()
        resp = ftp.voidresp()  # raises on 4xx/5xx
        if data_error is not None or got != size or h.hexdigest() != want:
            self.stats.bad_transfer(
                f"RETR {mode} files/{name}: {resp[:3]} after {got} of {size} bytes, "
                f"sha {'ok' if h.hexdigest() == want else 'wrong'}, data error {data_error!r}")
            return ("bad", resp[:3])
        self.stats.add("bytes_ok", size)
        return ("ok", resp[:3])

    def upload(self, ftp, mode, abort):
        src = self.rnd.choice(self.names)
        path = os.path.join(self.rig.root, "files", src)
        with open(path, "rb") as f:
            body = f.read()
        self.seq += 1
        data = os.urandom(16) + body  # unique per upload
        name = f"c{self.n}-{self.seq}-{len(data)}.bin"
        conn = open_data(ftp, mode, f"STOR upload/{name}")
        cut_at = self.rnd.randint(0, len(data)) if abort else None
        view = memoryview(data)
        sent = 0
        data_error = None
        try:
            while sent < len(data):
                if abort and sent >= cut_at:
                    break
                n = conn.send(view[sent:sent + 65536])
                sent += n
        except OSError as e:
            data_error = e
        if abort:
            out = self.finish_abort(ftp, conn, abort, "upload")
            self.remove(name)
            return out
        conn.close()  # FIN: the end of the file
        resp = ftp.voidresp()
        on_disk = os.path.join(self.rig.root, "upload", name)
        try:
            with open(on_disk, "rb") as f:
                stored = f.read()
        except OSError:
            stored = None
        self.remove(name)
        if data_error is not None or stored is None or sha256(stored) != sha256(data):
            self.stats.bad_transfer(
                f"STOR {mode} upload/{name}: {resp[:3]} after sending {sent} of {len(data)}, "
                f"stored {None if stored is None else len(stored)} bytes, data error {data_error!r}")
            return ("bad", resp[:3])
        self.stats.add("bytes_ok", len(data))
        return ("ok", resp[:3])

    def finish_abort(self, ftp, conn, how, direction):
        """Ends a transfer on purpose; the replies are counted, not judged,
        except that the session must carry on (NOOP answered)."""
        self.aborting = True
        self.stats.add(f"abort:{direction}:{how}")
        if how == "ABOR":
            try:
                resp = ftp.abort()  # Telnet IP + Synch, ABOR; the first reply
            except ftplib.Error as e:
                resp = str(e)
            conn.close()
        else:
            reset_close(conn)
            try:
                resp = ftp.getmultiline()
            except EOFError:
                raise
        self.stats.add(f"abort:{direction}:{how}:{resp[:3]}")
        if direction == "upload" and how == "reset" and resp[:1] == "2":
            # testing.md: a client that resets its upload's data connection
            # makes the server see a reset, never an upload complete.
            self.stats.add("abort:upload_reset_answered_2xx")
        if not resync(ftp):
            return ("failed_reply", "resync")
        return ("aborted_ok", resp[:3])

    def remove(self, name):
        try:
            os.unlink(os.path.join(self.rig.root, "upload", name))
        except OSError:
            pass


# === faults ==================================================================


def killer(rig, stats, stop, every):
    i = 0
    while not stop.wait(every):
        b = i % 2
        i += 1
        rig.procs.kill(f"vsftpd{b}")
        stats.add("backend_kills")
        log(f"killed vsftpd{b} (and its sessions)")
        if stop.wait(random.uniform(1, 5)):
            break
        for attempt in range(10):
            try:
                rig.start_backend(b)
                break
            except RuntimeError as e:
                rig.procs.kill(f"vsftpd{b}")
                log(f"restart of vsftpd{b} failed ({e}), again")
                time.sleep(1)
        log(f"restarted vsftpd{b}")
    # Both backends up for the end (SIGTERM with transfers in flight).
    for b in (0, 1):
        if f"vsftpd{b}" not in rig.procs.live:
            rig.start_backend(b)


def burster(rig, stats, stop, every):
    n = rig.pasv[1] - rig.pasv[0] + 1 + 4
    while not stop.wait(every):
        held, got227, got425, other = [], 0, 0, 0
        for _ in range(n):
            if stop.is_set():
                break
            ftp = ftplib.FTP(timeout=IO_TIMEOUT)
            try:
                ftp.connect("127.0.0.1", rig.gport)
                ftp.login()
                held.append(ftp)
                r = ftp.sendcmd("PASV")
                got227 += r.startswith("227")
            except ftplib.error_temp as e:
                if str(e).startswith("425"):
                    got425 += 1
                else:
                    other += 1
            except (ftplib.Error, OSError, EOFError):
                other += 1
        stats.add("bursts")
        stats.add("burst_pasv_227", got227)
        stats.add("burst_pasv_425", got425)
        stats.add("burst_other", other)
        log(f"PASV burst of {n}: {got227} x 227, {got425} x 425, {other} other")
        stop.wait(3)
        for ftp in held:
            try:
                ftp.quit()
            except (ftplib.Error, OSError, EOFError):
                pass
            ftp.close()


def reloader(rig, stats, stop, every):
    while not stop.wait(every):
        rig.weights = 2 if rig.weights == 1 else 1
        rig.write_config()
        try:
            os.kill(rig.gate.pid, signal.SIGHUP)
            stats.add("reloads")
        except ProcessLookupError:
            break


# === main ====================================================================


def metric_sum(text, name, label=None):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
            if label and label not in line:
                continue
            try:
                total += float(line.rsplit(" ", 1)[1])
            except (ValueError, IndexError):
                pass
    return int(total)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--ftpgate", required=True)
    ap.add_argument("--vsftpd", default="/usr/sbin/vsftpd")
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--passive-ports", type=int, default=20)
    ap.add_argument("--files", type=int, default=32)
    ap.add_argument("--max-file-bytes", type=int, default=8 * 1024 * 1024)
    ap.add_argument("--kill-every", type=float, default=45)
    ap.add_argument("--burst-every", type=float, default=20)
    ap.add_argument("--reload-every", type=float, default=5)
    ap.add_argument("--abort-share", type=float, default=0.1)
    ap.add_argument("--drain-seconds", type=int, default=15)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    random.seed(args.seed)

    stop_all = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_all.set())
    signal.signal(signal.SIGINT, lambda *_: stop_all.set())

    rig = Rig(args)
    stats = Stats()
    try:
        return run(args, rig, stats, stop_all)
    finally:
        stop_all.set()
        rig.procs.kill_all()


def run(args, rig, stats, stop_all):
    os.makedirs(os.path.join(rig.root, "upload"), exist_ok=True)
    os.chmod(rig.root, 0o755)  # vsftpd: the anonymous root must not be writable
    import pwd
    ftp_user = pwd.getpwnam("ftp")
    os.chown(os.path.join(rig.root, "upload"), ftp_user.pw_uid, ftp_user.pw_gid)
    files = make_files(rig.root, args.files, args.max_file_bytes)
    total = sum(s for s, _ in files.values())
    log(f"seed {args.seed}; {len(files)} files, {total / 1048576:.1f} MiB, "
        f"largest {max(s for s, _ in files.values()) / 1048576:.1f} MiB")
    for b in (0, 1):
        rig.start_backend(b)
    rig.start_gate()
    log(f"vsftpd on {rig.vports}, ftpgate on {rig.gport} (pid {rig.gate.pid}), "
        f"passive {rig.pasv[0]}-{rig.pasv[1]}, admin {rig.admin}; {args.clients} clients "
        f"for {args.seconds}s")

    faults_stop = threading.Event()
    drain = threading.Event()
    clients = [Client(n, rig, files, stats, stop_all, drain, args) for n in range(args.clients)]
    faults = [
        threading.Thread(target=killer, args=(rig, stats, faults_stop, args.kill_every), daemon=True),
        threading.Thread(target=burster, args=(rig, stats, faults_stop, args.burst_every), daemon=True),
        threading.Thread(target=reloader, args=(rig, stats, faults_stop, args.reload_every), daemon=True),
    ]
    for t in clients + faults:
        t.start()

    started = time.monotonic()
    next_report = started + 60
    while not stop_all.is_set() and time.monotonic() - started < args.seconds:
        stop_all.wait(1)
        if time.monotonic() >= next_report:
            next_report += 60
            log(f"{int(time.monotonic() - started)}s: {stats.get('attempted')} attempted, "
                f"{stats.get('plain:ok')} ok, bad {stats.get('bad')}")
    interrupted = stop_all.is_set()

    faults_stop.set()
    for t in faults:
        t.join(timeout=60)
    metrics = rig.metrics()

    # The end: SIGTERM while transfers are in flight.
    in_flight = sum(c.in_flight for c in clients)
    drain.set()
    t0 = time.monotonic()
    gate_rc = None
    if not interrupted:
        log(f"SIGTERM to ftpgate with {in_flight} transfers in flight")
        os.kill(rig.gate.pid, signal.SIGTERM)
        try:
            gate_rc = rig.gate.wait(timeout=args.drain_seconds + 30)
        except subprocess.TimeoutExpired:
            gate_rc = "still running"
    gate_stop_s = time.monotonic() - t0
    for c in clients:
        c.join(timeout=IO_TIMEOUT + 10)
    stop_all.set()
    still = [c.name for c in clients if c.is_alive()]

    with open(rig.gate_log, errors="replace") as f:
        gate_log = f.read()
    panics = gate_log.count("panicked")
    errors = sum(1 for line in gate_log.splitlines() if " ERROR " in line)

    s = stats.get
    ok = s("plain:ok")
    failed = s("plain:failed_reply") + s("plain:failed_conn")
    aborted = sum(s(f"aborted:{r}") for r in ("aborted_ok", "failed_reply", "failed_conn", "ok", "bad"))
    report = {
        "seed": args.seed,
        "seconds": args.seconds,
        "clients": args.clients,
        "passive_ports": args.passive_ports,
        "attempted": s("attempted"),
        "ok_2xx_right_bytes": ok,
        "ok_bytes": s("bytes_ok"),
        "failed_error_reply": s("plain:failed_reply"),
        "failed_connection_error": s("plain:failed_conn"),
        "bad_2xx_wrong_bytes": s("bad"),
        "aborted_on_purpose": aborted,
        "aborted_session_carried_on": s("aborted:aborted_ok"),
        "aborted_upload_reset_answered_2xx": s("abort:upload_reset_answered_2xx"),
        "sessions": s("sessions"),
        "session_errors": s("session_errors"),
        "backend_kills": s("backend_kills"),
        "pasv_bursts": s("bursts"),
        "burst_pasv_227": s("burst_pasv_227"),
        "burst_pasv_425": s("burst_pasv_425"),
        "reloads_sent": s("reloads"),
        "in_flight_at_sigterm": in_flight,
        "during_drain_ok": s("during_drain:ok"),
        "during_drain_failed": s("during_drain:failed_reply") + s("during_drain:failed_conn"),
        "ftpgate_exit": gate_rc,
        "ftpgate_stop_seconds": round(gate_stop_s, 1),
        "ftpgate_panics": panics,
        "ftpgate_error_lines": errors,
        "clients_still_running": still,
        "metrics_reloads_success": metric_sum(metrics, "ftpgate_config_reloads_total", 'result="success"'),
        "metrics_reloads_failure": metric_sum(metrics, "ftpgate_config_reloads_total", 'result="failure"'),
        "metrics_passive_pool_exhausted": metric_sum(metrics, "ftpgate_passive_pool_exhausted_total"),
        "metrics_transfers_cut": metric_sum(metrics, "ftpgate_transfers_cut_total"),
        "details": {k: v for k, v in sorted(stats.c.items()) if ":" in k},
        "bad_transfers": stats.bad,
    }
    with open(os.path.join(args.work, "report.json"), "w") as f:
        json.dump(report, f, indent=1)

    if interrupted:
        end_line = "INTERRUPTED: no SIGTERM sent, the run did not finish"
    else:
        end_line = (f"SIGTERM with {in_flight} transfers in flight: during the drain "
                    f"{report['during_drain_ok']} ok, {report['during_drain_failed']} failed; "
                    f"ftpgate exit {gate_rc} after {report['ftpgate_stop_seconds']} s")
    print(f"""
soak: {args.seconds}s, {args.clients} clients, passive range of {args.passive_ports}, seed {args.seed}
  transfers attempted                      {report['attempted']}
  completed, 2xx and right bytes           {ok} ({report['ok_bytes'] / 1048576:.0f} MiB checked)
  failed, error reply (4xx/5xx)            {report['failed_error_reply']}
  failed, connection error                 {report['failed_connection_error']}
  aborted on purpose (ABOR or reset)       {aborted} (session carried on: {report['aborted_session_carried_on']}; upload reset answered 2xx: {report['aborted_upload_reset_answered_2xx']})
  2xx BUT WRONG BYTES (must be 0)          {report['bad_2xx_wrong_bytes']}
  sessions {report['sessions']}, session-level errors {report['session_errors']}
  faults: {report['backend_kills']} backend kills, {report['pasv_bursts']} PASV bursts ({report['burst_pasv_227']} x 227, {report['burst_pasv_425']} x 425), {report['reloads_sent']} SIGHUP ({report['metrics_reloads_success']} ok, {report['metrics_reloads_failure']} failed by the metrics)
  passive range exhausted (metric)         {report['metrics_passive_pool_exhausted']}
  {end_line}
  ftpgate panics (must be 0)               {panics}; ERROR lines {errors}
  report: {os.path.join(args.work, 'report.json')}""", flush=True)

    ok_run = (report["bad_2xx_wrong_bytes"] == 0 and panics == 0 and not interrupted
              and gate_rc == 0 and not still and report["attempted"] > 0)
    return 0 if ok_run else 1


if __name__ == "__main__":
    sys.exit(main())
