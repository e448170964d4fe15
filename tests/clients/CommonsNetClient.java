// Drives Apache Commons Net's FTPClient / FTPSClient (Debian's
// libcommons-net-java) for ftpgate's integration tests
// (tests/it/more_clients.rs): log in, list a directory, download one file,
// upload one file, log out.
//
//   javac -cp /usr/share/java/commons-net.jar -d OUT CommonsNetClient.java
//   java -cp OUT:/usr/share/java/commons-net.jar CommonsNetClient \
//        HOST PORT USER PASS MODE TLS CA LIST_DIR GET_REMOTE GET_LOCAL PUT_LOCAL PUT_REMOTE
//
// MODE:
//   pasv     enterLocalPassiveMode(): PASV, with the 227 address used as given
//            (setPassiveNatWorkaroundStrategy(null), and remote verification
//            off, which would otherwise refuse a data peer other than the
//            control peer)
//   epsv     passive with setUseEPSVwithIPv4(true): EPSV
//   port     enterLocalActiveMode(): PORT naming the control connection's
//            local address (Commons Net sends EPRT only for IPv6)
//   eprt     the same on an IPv6 control connection (EPRT)
//   default  passive with the library's defaults: PASV, the NAT workaround
//            (a site-local 227 address swapped for the control peer) and
//            remote verification (the data peer must be the control peer)
// TLS: none | explicit (FTPSClient(false): AUTH TLS) | implicit
//   (FTPSClient(true)); with TLS the driver sends PBSZ 0 and PROT P after
//   login, as Commons Net's own examples do. Optionally ":1.2" or ":1.3"
//   pins the version. The server certificate is checked against the PEM
//   file CA only, with endpoint (IP/name) checking on. Commons Net does not
//   resume the control connection's TLS session on data connections.
//
// stdout: `ENTRY <name>` per LIST entry, then `DONE`; stderr: the protocol
// conversation (PrintCommandListener) and, with TLS, `CONTROL-TLS
// <version>`. Exit status 1 on any error or negative reply.

import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintWriter;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import java.time.Duration;

import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;

import org.apache.commons.net.PrintCommandListener;
import org.apache.commons.net.ftp.FTP;
import org.apache.commons.net.ftp.FTPClient;
import org.apache.commons.net.ftp.FTPFile;
import org.apache.commons.net.ftp.FTPReply;
import org.apache.commons.net.ftp.FTPSClient;

public class CommonsNetClient {
    /** FTPSClient that tells which TLS version its control connection uses. */
    static class ReportingFTPSClient extends FTPSClient {
        ReportingFTPSClient(boolean implicit) {
            super(implicit);
        }

        String controlProtocol() {
            return _socket_ instanceof SSLSocket ? ((SSLSocket) _socket_).getSession().getProtocol() : "none";
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 12) {
            System.err.println("usage: CommonsNetClient HOST PORT USER PASS MODE TLS CA LIST_DIR"
                    + " GET_REMOTE GET_LOCAL PUT_LOCAL PUT_REMOTE");
            System.exit(2);
        }
        try {
            run(args);
        } catch (Exception e) {
            System.err.println("commons-net error: " + e);
            e.printStackTrace();
            System.exit(1);
        }
    }

    static void check(FTPClient ftp, boolean ok, String what) throws IOException {
        if (!ok) {
            throw new IOException(what + " failed: " + ftp.getReplyString().trim());
        }
    }

    static TrustManager trustOnly(String caFile) throws Exception {
        KeyStore ks = KeyStore.getInstance(KeyStore.getDefaultType());
        ks.load(null, null);
        try (InputStream in = new FileInputStream(caFile)) {
            ks.setCertificateEntry("ftpgate-test-ca",
                    CertificateFactory.getInstance("X.509").generateCertificate(in));
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(ks);
        return tmf.getTrustManagers()[0];
    }

    static void run(String[] a) throws Exception {
        String host = a[0], user = a[2], pass = a[3], mode = a[4];
        int port = Integer.parseInt(a[1]);
        String[] tlsArg = a[5].split(":", 2);
        String tls = tlsArg[0];
        String version = tlsArg.length > 1 ? tlsArg[1] : "";
        String ca = a[6], listDir = a[7], getRemote = a[8], getLocal = a[9], putLocal = a[10], putRemote = a[11];

        FTPClient ftp;
        if (tls.equals("none")) {
            ftp = new FTPClient();
        } else {
            ReportingFTPSClient ftps = new ReportingFTPSClient(tls.equals("implicit"));
            ftps.setTrustManager(trustOnly(ca));
            ftps.setEndpointCheckingEnabled(true);
            if (!version.isEmpty()) {
                ftps.setEnabledProtocols(new String[] {"TLSv" + version});
            }
            ftp = ftps;
        }
        ftp.addProtocolCommandListener(new PrintCommandListener(new PrintWriter(System.err), true));
        ftp.setConnectTimeout(20_000);
        ftp.setDefaultTimeout(20_000);
        ftp.setDataTimeout(Duration.ofSeconds(20));
        ftp.connect(host, port);
        check(ftp, FTPReply.isPositiveCompletion(ftp.getReplyCode()), "greeting");
        try {
            check(ftp, ftp.login(user, pass), "login");
            if (ftp instanceof ReportingFTPSClient) {
                ReportingFTPSClient ftps = (ReportingFTPSClient) ftp;
                System.err.println("CONTROL-TLS " + ftps.controlProtocol());
                ftps.execPBSZ(0);
                ftps.execPROT("P");
                check(ftp, FTPReply.isPositiveCompletion(ftp.getReplyCode()), "PROT P");
            }
            check(ftp, ftp.setFileType(FTP.BINARY_FILE_TYPE), "TYPE I");
            switch (mode) {
                case "pasv":
                    ftp.enterLocalPassiveMode();
                    ftp.setPassiveNatWorkaroundStrategy(null);
                    ftp.setRemoteVerificationEnabled(false);
                    break;
                case "epsv":
                    ftp.enterLocalPassiveMode();
                    ftp.setUseEPSVwithIPv4(true);
                    break;
                case "port":
                case "eprt":
                    ftp.enterLocalActiveMode();
                    break;
                case "default":
                    ftp.enterLocalPassiveMode();
                    break;
                default:
                    throw new IllegalArgumentException("unknown mode " + mode);
            }
            FTPFile[] files = ftp.listFiles(listDir);
            check(ftp, FTPReply.isPositiveCompletion(ftp.getReplyCode()), "LIST");
            for (FTPFile f : files) {
                if (f != null && !f.getName().equals(".") && !f.getName().equals("..")) {
                    System.out.println("ENTRY " + f.getName());
                }
            }
            try (OutputStream out = new FileOutputStream(getLocal)) {
                check(ftp, ftp.retrieveFile(getRemote, out), "RETR " + getRemote);
            }
            try (InputStream in = new FileInputStream(putLocal)) {
                check(ftp, ftp.storeFile(putRemote, in), "STOR " + putRemote);
            }
            check(ftp, ftp.logout(), "QUIT");
            System.out.println("DONE");
        } finally {
            if (ftp.isConnected()) {
                ftp.disconnect();
            }
        }
    }
}
