#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ from real transcripts.

The transcripts in fuzz/transcripts/ were captured from vsftpd 3.0.3,
ProFTPD 1.3.8 and pure-ftpd 1.0.50 on 127.0.0.1 (Debian 12): lines starting
with "C: " are what the client sent, every other line is the server's bytes
exactly as received (CRLF). Each seed gets the parameter header its target
reads first (see the //! comment of each fuzz_targets/*.rs and
fuzz/README.md). Re-run after changing a header layout:

    python3 fuzz/make-seeds.py

Existing files with the same names are overwritten; others are left alone.
"""

import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
TRANSCRIPTS = {
    "vsftpd": "vsftpd-3.0.3.txt",
    "proftpd": "proftpd-1.3.8.txt",
    "pure-ftpd": "pure-ftpd-1.0.50.txt",
}

# Indexes into INTERESTING_IPS in fuzz/src/lib.rs (tag 3 = table entry).
IP = {
    "127.0.0.1": 0, "0.0.0.0": 1, "10.0.0.1": 2, "192.168.1.1": 3,
    "172.16.0.1": 4, "100.64.0.1": 5, "169.254.1.1": 6, "203.0.113.10": 7,
    "198.51.100.7": 8, "::1": 9, "::": 10, "fd00::1": 11, "fe80::1": 12,
    "2001:db8::1": 13, "::ffff:192.168.1.1": 14, "::ffff:198.51.100.7": 15,
}


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def transcript(server):
    """(client stream, server stream, {command: server reply}) of a capture."""
    with open(os.path.join(HERE, "transcripts", TRANSCRIPTS[server]), "rb") as f:
        raw = f.read()
    client, backend, replies = b"", b"", {}
    cmd = "greeting"
    for line in raw.split(b"\r\n")[:-1]:
        if line.startswith(b"C: "):
            client += line[3:] + b"\r\n"
            cmd = line[3:].decode()
        else:
            backend += line + b"\r\n"
            replies[cmd] = replies.get(cmd, b"") + line + b"\r\n"
    return client, backend, replies


def slug(s):
    return re.sub(r"[^A-Za-z0-9.]+", "-", s).strip("-").lower()


# === command_line: [line cap byte (cap = 1 + 8*b), chunk seed] + client stream ===

def command_line():
    big = bytes([255])  # cap 2041
    for server in TRANSCRIPTS:
        client, _, _ = transcript(server)
        write("command_line", f"{server}-session-client-commands", big + b"\x00" + client)
        write("command_line", f"{server}-session-client-commands-read-bytewise", big + b"\x01" + client)
    cases = {
        "curl-passive-retr": b"USER anonymous\r\nPASS ftp@example.com\r\nPWD\r\nEPSV\r\nTYPE I\r\nSIZE file.bin\r\nRETR file.bin\r\nQUIT\r\n",
        "curl-active-eprt-then-port": b"EPRT |1|127.0.0.1|40000|\r\nPORT 127,0,0,1,156,64\r\nLIST\r\n",
        "curl-upload-stor": b"EPSV\r\nTYPE I\r\nSTOR upload/big.bin\r\nQUIT\r\n",
        "lftp-login-feat-opts": b"FEAT\r\nAUTH TLS\r\nUSER anonymous\r\nPASS lftp@\r\nOPTS UTF8 ON\r\nPWD\r\nEPSV\r\nMLSD\r\n",
        "ftplib-pasv-list": b"USER anonymous\r\nPASS anonymous@\r\nTYPE A\r\nPASV\r\nLIST\r\n",
        "abor-with-telnet-ip-and-synch": b"RETR big\r\n\xff\xf4\xff\xf2ABOR\r\n",
        "abor-synch-byte-without-iac-oobinline": b"\xff\xf4\xf2ABOR\r\n",
        "telnet-will-wont-do-dont-options": b"NO\xff\xfb\x01OP\r\nPW\xff\xfe\x03D\r\n",
        "iac-iac-literal-ff-in-path": b"RETR a\xff\xffb.txt\r\n",
        "bare-lf-and-lone-cr": b"USER a\nPASS b\rc\r\nNOOP\n",
        "mixed-case-and-extra-spaces": b"uSeR   anonymous\r\n  noop\r\nRetr  two  spaces.txt\r\nLIST \r\n",
        "non-utf8-path-latin1": b"RETR caf\xe9.txt\r\nSTOR \xc3\x28bad-utf8\r\n",
        "site-and-unknown-verbs": b"SITE CHMOD 644 f\r\nXMKD dir\r\nRETR2 x\r\n123\r\n\r\n",
        "epsv-all-then-pasv": b"EPSV ALL\r\nPASV\r\nEPSV 2\r\n",
        "lprt-lpsv-refused": b"LPSV\r\nLPRT 4,4,127,0,0,1,2,4,1\r\n",
    }
    for name, data in cases.items():
        write("command_line", name, big + b"\x00" + data)
    # Small caps exercise the overlong-line path: cap 9, one read and bytewise.
    long = b"NOOP\r\nRETR " + b"x" * 100 + b"\r\nPWD\r\n"
    write("command_line", "overlong-line-cap-9", b"\x01\x00" + long)
    write("command_line", "overlong-line-cap-9-read-bytewise", b"\x01\x01" + long)
    write("command_line", "line-exactly-at-cap-9-split-before-crlf", b"\x01\x08" + b"RETR abcd\r\nRETR abcde\r\n")


# === reply_lines: [line cap byte (4 + 4*b), reply byte cap (8*b), chunk seed] + server stream ===

def reply_lines():
    for server in TRANSCRIPTS:
        _, backend, replies = transcript(server)
        write("reply_lines", f"{server}-session-server-replies", b"\xff\xff\x00" + backend)
        write("reply_lines", f"{server}-session-server-replies-read-in-5-byte-chunks", b"\xff\xff\x04" + backend)
        write("reply_lines", f"{server}-feat-capped-at-32-bytes", b"\xff\x04\x00" + replies["FEAT"])
    _, _, pure = transcript("pure-ftpd")
    write("reply_lines", "pure-ftpd-greeting-multiline-bytewise", b"\xff\xff\x01" + pure["greeting"])
    cases = {
        "continuation-lines-with-other-codes": b"230-Welcome\r\n230-more\r\n200 not the end\r\n230\r\n",
        "garbage-then-reply": b"hello\r\n\r\n600 bad code\r\n099 bad\r\n2000\r\n226 ok\r\n",
        "code-without-text": b"226\r\n220-\r\n220\r\n",
        "bare-lf-replies": b"220 hi\n211-Features:\n EPSV\n211 End\n",
        "windows-iis-style-greeting": b"220-Microsoft FTP Service\r\n220 Ready\r\n",
    }
    for name, data in cases.items():
        write("reply_lines", name, b"\xff\xff\x00" + data)
    write("reply_lines", "overlong-line-cut-to-8-bytes", b"\x01\xff\x00" + b"220 " + b"x" * 50 + b"\r\n200 ok\r\n")
    write("reply_lines", "overlong-line-cut-to-8-bytes-read-bytewise", b"\x01\xff\x01" + b"211-" + b"y" * 50 + b"\r\n EPSV\r\n211 End\r\n")


# === host_port: raw argument or reply text ===

def host_port():
    cases = {
        "port-arg-loopback": b"127,0,0,1,200,10",
        "port-arg-spaces-around-commas": b"127, 0, 0, 1, 4, 1",
        "port-arg-private-port-21": b"10,0,0,1,0,21",
        "port-arg-leading-zeros": b"010,000,000,001,004,001",
        "port-arg-octet-256": b"256,0,0,1,4,1",
        "eprt-arg-v4": b"|1|127.0.0.1|51210|",
        "eprt-arg-v6-loopback": b"|2|::1|51211|",
        "eprt-arg-v6-rfc2428-example": b"|2|1080::8:800:200C:417A|5282|",
        "eprt-arg-v4-mapped-v6": b"|2|::ffff:192.168.1.1|5000|",
        "eprt-arg-bang-delimiter": b"!2!::1!2000!",
        "eprt-arg-unknown-protocol-3": b"|3|x|1|",
        "eprt-arg-port-70000": b"|1|1.2.3.4|70000|",
        "pasv-227-text-vsftpd": b"Entering Passive Mode (127,0,0,1,200,158).",
        "pasv-227-text-pure-ftpd-no-dot": b"Entering Passive Mode (127,0,0,1,197,139)",
        "pasv-227-text-no-parentheses": b"Entering Passive Mode 192,168,1,1,243,172",
        "pasv-227-text-equals-form": b"=192,168,1,1,243,172",
        "pasv-227-text-number-before-address": b"Passive mode on 2024 (192,168,1,1,243,172)",
        "pasv-227-text-five-numbers": b"Entering Passive Mode (192,168,1,1,243)",
        "epsv-229-text-vsftpd": b"Entering Extended Passive Mode (|||31429|)",
        "epsv-229-text-pure-ftpd": b"Extended Passive mode OK (|||30736|)",
        "epsv-229-text-bang-delimiter": b"EPSV ok (!!!40000!)",
        "epsv-229-text-port-0": b"Entering Extended Passive Mode (|||0|)",
        "epsv-229-text-two-delimiters": b"Entering Extended Passive Mode (||6446|)",
        "port-range-config": b"50000-50099",
        "port-range-spaces": b" 1 - 1 ",
    }
    for name, data in cases.items():
        write("host_port", name, data)


# === rewrite_reply: flags, backend ip+port, public ip, lease port, client ip,
#     PORT/EPRT ip+port, then a backend reply stream (also tried as PORT/EPRT arg) ===

def ip(addr):
    return bytes([3, IP[addr]])


def header(flags, backend="127.0.0.1", public="203.0.113.10", lease=50001,
           client="198.51.100.7", named="192.168.1.1", named_port=5000):
    return (bytes([flags]) + ip(backend) + (21).to_bytes(2, "big") + ip(public)
            + lease.to_bytes(2, "big") + ip(client) + ip(named) + named_port.to_bytes(2, "big"))


TRUST, NAT_FIX, SENT_EPSV, CLIENT_EPSV = 1, 2, 4, 8


def rewrite_reply():
    for server in TRANSCRIPTS:
        _, _, replies = transcript(server)
        write("rewrite_reply", f"{server}-pasv-227", header(NAT_FIX) + replies["PASV"])
        write("rewrite_reply", f"{server}-pasv-227-trusted", header(TRUST) + replies["PASV"])
        write("rewrite_reply", f"{server}-epsv-229", header(SENT_EPSV | CLIENT_EPSV) + replies["EPSV"])
        write("rewrite_reply", f"{server}-epsv-2-reply", header(SENT_EPSV) + replies["EPSV 2"])
        write("rewrite_reply", f"{server}-feat", header(0) + replies["FEAT"])
    cases = {
        "nat-backend-227-names-private-10.x": (header(0), b"227 Entering Passive Mode (10,0,0,5,195,80).\r\n"),
        "backend-227-names-public-address-itself": (header(TRUST), b"227 Entering Passive Mode (203,0,113,10,195,81).\r\n"),
        "backend-227-zero-address-trusted": (header(TRUST), b"227 Entering Passive Mode (0,0,0,0,243,172).\r\n"),
        "backend-227-multiline": (header(0), b"227-Entering Passive Mode\r\n227 =127,0,0,2,4,1\r\n"),
        "backend-227-port-0": (header(0), b"227 Entering Passive Mode (127,0,0,2,0,0)\r\n"),
        "backend-pasv-refused-500": (header(0), b"500 Unknown command.\r\n"),
        "backend-epsv-refused-425": (header(SENT_EPSV), b"425 Can't open data connection.\r\n"),
        "feat-single-line-no-features": (header(0), b"211 No features\r\n"),
        "feat-error-500": (header(0), b"500 FEAT not understood\r\n"),
        "public-address-ipv6-client-pasv": (header(0, public="2001:db8::1"), b"227 Entering Passive Mode (127,0,0,1,200,158).\r\n"),
        "public-address-v4-mapped": (header(0, public="::ffff:198.51.100.7"), b"227 Entering Passive Mode (127,0,0,1,200,158).\r\n"),
        "backend-ipv6-epsv": (header(SENT_EPSV, backend="::1"), b"229 Entering Extended Passive Mode (|||31429|)\r\n"),
        "port-arg-private-client-nat-fix": (header(NAT_FIX), b"192,168,1,5,19,136"),
        "port-arg-private-client-no-nat-fix": (header(0), b"192,168,1,5,19,136"),
        "port-arg-bounce-to-third-host": (header(NAT_FIX), b"203,0,113,99,19,136"),
        "port-arg-client-own-port-21": (header(NAT_FIX, named_port=21), b"198,51,100,7,0,21"),
        "eprt-arg-v6-unique-local-nat-fix": (header(NAT_FIX, client="2001:db8::1", named="fd00::1"), b"|2|fd00::5|2000|"),
        "eprt-arg-v4-mapped-client": (header(0, named="::ffff:198.51.100.7"), b"|1|198.51.100.7|2000|"),
    }
    for name, (h, data) in cases.items():
        write("rewrite_reply", name, h + data)


if __name__ == "__main__":
    command_line()
    reply_lines()
    host_port()
    rewrite_reply()
    for t in sorted(os.listdir(CORPUS)):
        print(f"{t}: {len(os.listdir(os.path.join(CORPUS, t)))} seeds")
