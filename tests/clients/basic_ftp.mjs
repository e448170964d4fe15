// Drives Node's basic-ftp (https://github.com/patrickjuchli/basic-ftp) for
// ftpgate's integration tests (tests/it/more_clients.rs): log in, list a
// directory, download one file, upload one file, close (basic-ftp sends
// QUIT).
//
//   node basic_ftp.mjs HOST PORT USER PASS MODE TLS CA LIST_DIR \
//        GET_REMOTE GET_LOCAL PUT_LOCAL PUT_REMOTE
//
// MODE (basic-ftp is passive only):
//   pasv     PASV, the 227 address used as given (allowSeparateTransferHost:
//            true; basic-ftp then only swaps a private 227 address for a
//            public control address, which loopback never triggers)
//   epsv     EPSV (the control host and the 229 port)
//   default  the library's defaults: EPSV first, then PASV connecting to the
//            control host whatever the 227 says
// TLS: none | explicit (AUTH TLS, then PBSZ 0 / PROT P) | implicit, each
//   optionally with ":1.2" or ":1.3" to pin the version; the server is
//   verified against the PEM file CA (chain and IP/name).
//
// The basic-ftp module is loaded from $FTPGATE_BASIC_FTP_DIR (default
// /opt/ftpgate-clients/node, where scripts/install-test-deps.sh puts it).
// stdout: `ENTRY <name>` per listing entry, then `DONE`; stderr: basic-ftp's
// verbose protocol log (`> COMMAND`, `< reply`) and, with TLS,
// `CONTROL-TLS <version>`. Exit status 1 on any error.

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import path from "node:path";

const dir = process.env.FTPGATE_BASIC_FTP_DIR || "/opt/ftpgate-clients/node";
const require = createRequire(path.join(dir, "package.json"));
const ftp = require("basic-ftp");

const [host, port, user, password, mode, tlsArg, ca, listDir, getRemote, getLocal, putLocal, putRemote] =
    process.argv.slice(2);
if (putRemote === undefined) {
    console.error("usage: basic_ftp.mjs HOST PORT USER PASS MODE TLS CA LIST_DIR GET_REMOTE GET_LOCAL PUT_LOCAL PUT_REMOTE");
    process.exit(2);
}
const [tls, version] = tlsArg.split(":");

async function main() {
    const client = new ftp.Client(20000, { allowSeparateTransferHost: mode === "pasv" });
    client.ftp.verbose = true;
    client.ftp.log = (message) => process.stderr.write(message + "\n");
    if (mode === "pasv") {
        client.prepareTransfer = ftp.enterPassiveModeIPv4;
    } else if (mode === "epsv") {
        client.prepareTransfer = ftp.enterPassiveModeIPv6;
    } else if (mode !== "default") {
        throw new Error(`basic-ftp has no mode ${mode} (passive only)`);
    }
    const secureOptions = { ca: tls === "none" ? undefined : readFileSync(ca) };
    if (version) {
        secureOptions.minVersion = secureOptions.maxVersion = `TLSv${version}`;
    }
    try {
        await client.access({
            host,
            port: Number(port),
            user,
            password,
            secure: { none: false, explicit: true, implicit: "implicit" }[tls],
            secureOptions,
        });
        if (client.ftp.socket.getProtocol) {
            console.error(`CONTROL-TLS ${client.ftp.socket.getProtocol()}`);
        }
        for (const entry of await client.list(listDir)) {
            console.log(`ENTRY ${entry.name}`);
        }
        await client.downloadTo(getLocal, getRemote);
        await client.uploadFrom(putLocal, putRemote);
        console.log("DONE");
    } finally {
        client.close();
    }
}

main().catch((err) => {
    console.error(`basic-ftp error: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
});
