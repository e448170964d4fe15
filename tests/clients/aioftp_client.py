"""Drives Python's aioftp client (asyncio) for ftpgate's integration tests
(tests/it/more_clients.rs): log in, list a directory, download one file,
upload one file, quit.

    python aioftp_client.py HOST PORT USER PASS MODE TLS CA LIST_DIR \\
        GET_REMOTE GET_LOCAL PUT_LOCAL PUT_REMOTE

MODE (aioftp's client is passive only, `passive_commands`):
  pasv     PASV, the 227 address used as given
           (trust_server_pasv_ipv4_address=True)
  epsv     EPSV (the control host and the 229 port)
  default  the library's defaults: EPSV, falling back to PASV on 50x, and a
           227 address ignored in favour of the control host
TLS: none | explicit (upgrade_to_tls: AUTH TLS, PBSZ 0, PROT P) |
  implicit (ssl= on connect; aioftp sends no PBSZ/PROT then, and wraps every
  data connection in TLS) | implicit-prot (implicit, plus PBSZ 0 and PROT P
  sent after login), each optionally with ":1.2" or ":1.3" to pin the
  version. The server is verified against the PEM file CA (chain and IP).
  Data connections resume the control connection's TLS session (aioftp does
  that by itself).

Listing: `client.list(LIST_DIR)`, which tries MLSD and falls back to LIST on
a 50x reply (vsftpd has no MLSD).

Run it with the venv that scripts/install-test-deps.sh makes
(/opt/ftpgate-clients/python/bin/python). stdout: `ENTRY <name>` per listing
entry, then `DONE`; stderr: aioftp's debug log (commands and replies) and,
with TLS, `CONTROL-TLS <version>`.
Exit status 1 on any error. FTPGATE_AIOFTP_TIMEOUT (seconds, default 20)
bounds every connect and every read or write.
"""

import asyncio
import logging
import os
import pathlib
import ssl
import sys

import aioftp


def tls_context(ca, version):
    ctx = ssl.create_default_context(cafile=ca)
    if version == "1.2":
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    return ctx


async def main(argv):
    (host, port, user, password, mode, tls_arg, ca, list_dir,
     get_remote, get_local, put_local, put_remote) = argv
    tls, _, version = tls_arg.partition(":")
    timeout = float(os.environ.get("FTPGATE_AIOFTP_TIMEOUT", "20"))
    kwargs = {"socket_timeout": timeout, "connection_timeout": timeout}
    if mode == "pasv":
        kwargs.update(passive_commands=("pasv",), trust_server_pasv_ipv4_address=True)
    elif mode == "epsv":
        kwargs.update(passive_commands=("epsv",))
    elif mode != "default":
        raise SystemExit(f"aioftp has no mode {mode} (passive only)")
    ctx = None if tls == "none" else tls_context(ca, version)
    if tls in ("implicit", "implicit-prot"):
        kwargs["ssl"] = ctx
    client = aioftp.Client(**kwargs)
    await client.connect(host, int(port))
    try:
        if tls == "explicit":
            await client.upgrade_to_tls(ctx)
        await client.login(user, password)
        if tls == "implicit-prot":
            await client.command("PBSZ 0", "200")
            await client.command("PROT P", "200")
        ssl_object = client.stream.writer.transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            print("CONTROL-TLS", ssl_object.version(), file=sys.stderr)
        for name, _info in await client.list(list_dir):
            print("ENTRY", pathlib.PurePosixPath(name).name, flush=True)
        # The stream API: download()/upload() would first probe the paths
        # with MLST and, on vsftpd, extra LIST data connections.
        with open(get_local, "wb") as out:
            async with client.download_stream(get_remote) as stream:
                async for block in stream.iter_by_block():
                    out.write(block)
        with open(put_local, "rb") as src:
            async with client.upload_stream(put_remote) as stream:
                while block := src.read(65536):
                    await stream.write(block)
        await client.quit()
        print("DONE", flush=True)
    finally:
        client.close()


if __name__ == "__main__":
    if len(sys.argv) != 13:
        raise SystemExit(__doc__)
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s %(message)s")
    asyncio.run(main(sys.argv[1:]))
