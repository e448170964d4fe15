//! A throwaway PKI for the FTPS tests, made at test time with rcgen (no
//! `openssl` command, no fixtures that expire in the repository).
//!
//! [`TestPki::new`] writes PEM files into its own temp dir (removed on drop):
//!
//! - `ca_pem`: the test CA (give it to clients as their only trust anchor);
//! - `server_cert`/`server_key`: valid, signed by the CA, SANs `localhost`,
//!   IP `127.0.0.1` and IP `::1`;
//! - `expired_cert`/`expired_key`: same names, signed by the CA, valid only
//!   in 2020;
//! - `wrong_name_cert`/`wrong_name_key`: signed by the CA, valid, but only
//!   for DNS `wrong.example` (no IP SAN);
//! - `self_signed_cert`/`self_signed_key`: the right names but signed by its
//!   own key (no CA);
//! - `server_combined`: `server_cert` followed by `server_key` in one file,
//!   for servers that want one file (pure-ftpd's default
//!   `/etc/ssl/private/pure-ftpd.pem` layout);
//! - `other_ca_pem`: a second CA nobody trusts by default;
//! - client certificates on demand ([`TestPki::client_cert`] from the test
//!   CA, [`TestPki::other_ca_client_cert`] from the second one): TLS client
//!   (extended key usage clientAuth), the CN and email SANs asked for.
//!
//! Keys are ECDSA P-256 in PKCS#8 PEM (`BEGIN PRIVATE KEY`): rcgen with
//! ring cannot generate RSA keys, and every server and client of the rig
//! (OpenSSL 3, GnuTLS, rustls) takes ECDSA certificates. Certificates are
//! PEM (`BEGIN CERTIFICATE`), the leaf alone (no chain in the file).

#![allow(dead_code)]

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::DigitallySignedStruct;

/// DNS name on every "right" certificate, besides the loopback IPs.
pub const SERVER_DNS_NAME: &str = "localhost";
/// The only name of the wrong-name certificate.
pub const WRONG_NAME: &str = "wrong.example";

/// The CA, the leaf certificates and their keys, as PEM files in a temp dir.
pub struct TestPki {
    /// The test CA certificate (PEM). Clients trust only this.
    pub ca_pem: PathBuf,
    /// Valid server certificate for localhost, 127.0.0.1 and ::1.
    pub server_cert: PathBuf,
    /// Its key (PKCS#8 PEM).
    pub server_key: PathBuf,
    /// `server_cert` then `server_key` in one file.
    pub server_combined: PathBuf,
    /// CA-signed, right names, expired (valid 2020-01-01 to 2020-12-31).
    pub expired_cert: PathBuf,
    /// Its key.
    pub expired_key: PathBuf,
    /// CA-signed, valid, but only for `wrong.example`.
    pub wrong_name_cert: PathBuf,
    /// Its key.
    pub wrong_name_key: PathBuf,
    /// Right names, valid dates, signed by itself (not by the CA).
    pub self_signed_cert: PathBuf,
    /// Its key.
    pub self_signed_key: PathBuf,
    /// DER of the CA certificate (for rustls root stores in tests).
    pub ca_der: Vec<u8>,
    /// DER of `server_cert`.
    pub server_cert_der: Vec<u8>,
    /// DER (PKCS#8) of `server_key`.
    pub server_key_der: Vec<u8>,
    /// A second CA (PEM), trusted by nobody unless a test says so.
    pub other_ca_pem: PathBuf,
    ca: Certificate,
    /// The CAs' keys as PEM (a `KeyPair` would make `TestPki` unwind-unsafe).
    ca_key: String,
    other_ca: Certificate,
    other_ca_key: String,
    /// Client certificates issued so far (file names).
    issued: AtomicUsize,
    dir: tempfile::TempDir,
}

/// A client certificate and its key, as files and DER.
#[derive(Debug, Clone)]
pub struct ClientCertFiles {
    /// The certificate (PEM, leaf only).
    pub cert: PathBuf,
    /// Its key (PKCS#8 PEM).
    pub key: PathBuf,
    /// DER of the certificate.
    pub der: Vec<u8>,
    /// DER (PKCS#8) of the key.
    pub key_der: Vec<u8>,
}

/// A self-signed CA named `cn`.
fn make_ca(cn: &str) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().expect("CA key");
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "ftpgate tests");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = date_time_ymd(VALID_FROM.0, VALID_FROM.1, VALID_FROM.2);
    p.not_after = date_time_ymd(VALID_TO.0, VALID_TO.1, VALID_TO.2);
    let cert = p.self_signed(&key).expect("self-sign CA");
    (cert, key)
}

/// Client-certificate parameters: TLS client, CN `cn`, email SANs `emails`.
fn client_params(cn: &str, emails: &[&str]) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "ftpgate tests");
    p.subject_alt_names = emails
        .iter()
        .map(|e| SanType::Rfc822Name((*e).try_into().expect("email")))
        .collect();
    p.is_ca = IsCa::NoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = date_time_ymd(VALID_FROM.0, VALID_FROM.1, VALID_FROM.2);
    p.not_after = date_time_ymd(VALID_TO.0, VALID_TO.1, VALID_TO.2);
    p
}

fn server_names() -> Vec<SanType> {
    vec![
        SanType::DnsName(SERVER_DNS_NAME.try_into().expect("dns name")),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ]
}

/// Leaf parameters: TLS server, the given names and validity.
fn leaf_params(
    cn: &str,
    sans: Vec<SanType>,
    from: (i32, u8, u8),
    to: (i32, u8, u8),
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "ftpgate tests");
    p.subject_alt_names = sans;
    p.is_ca = IsCa::NoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = date_time_ymd(from.0, from.1, from.2);
    p.not_after = date_time_ymd(to.0, to.1, to.2);
    p
}

const VALID_FROM: (i32, u8, u8) = (2020, 1, 1);
const VALID_TO: (i32, u8, u8) = (2099, 12, 31);

impl TestPki {
    /// Generates a fresh CA and leaves and writes them (certificates 0644,
    /// keys 0600, directory 0755) into a new temp dir.
    pub fn new() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("ftpgate-pki-")
            .tempdir()
            .expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod pki dir");

        let (ca, ca_key) = make_ca("ftpgate test CA");
        let (other_ca, other_ca_key) = make_ca("ftpgate test CA 2 (untrusted)");

        let signed = |params: CertificateParams| -> (Certificate, KeyPair) {
            let key = KeyPair::generate().expect("leaf key");
            let cert = params.signed_by(&key, &ca, &ca_key).expect("sign leaf");
            (cert, key)
        };
        let (server, server_key) = signed(leaf_params(
            "localhost",
            server_names(),
            VALID_FROM,
            VALID_TO,
        ));
        let (expired, expired_key) = signed(leaf_params(
            "localhost (expired)",
            server_names(),
            (2020, 1, 1),
            (2020, 12, 31),
        ));
        let (wrong, wrong_key) = signed(leaf_params(
            WRONG_NAME,
            vec![SanType::DnsName(WRONG_NAME.try_into().expect("dns name"))],
            VALID_FROM,
            VALID_TO,
        ));
        let self_key = KeyPair::generate().expect("self-signed key");
        let self_signed = leaf_params(
            "localhost (self-signed)",
            server_names(),
            VALID_FROM,
            VALID_TO,
        )
        .self_signed(&self_key)
        .expect("self-sign leaf");

        let d = dir.path();
        let cert_file = |name: &str, pem: &str| write_pem(d, name, pem, 0o644);
        let key_file = |name: &str, pem: &str| write_pem(d, name, pem, 0o600);
        TestPki {
            ca_pem: cert_file("ca.pem", &ca.pem()),
            server_cert: cert_file("server.pem", &server.pem()),
            server_key: key_file("server.key", &server_key.serialize_pem()),
            server_combined: key_file(
                "server-combined.pem",
                &format!("{}{}", server.pem(), server_key.serialize_pem()),
            ),
            expired_cert: cert_file("expired.pem", &expired.pem()),
            expired_key: key_file("expired.key", &expired_key.serialize_pem()),
            wrong_name_cert: cert_file("wrong-name.pem", &wrong.pem()),
            wrong_name_key: key_file("wrong-name.key", &wrong_key.serialize_pem()),
            self_signed_cert: cert_file("self-signed.pem", &self_signed.pem()),
            self_signed_key: key_file("self-signed.key", &self_key.serialize_pem()),
            ca_der: ca.der().to_vec(),
            server_cert_der: server.der().to_vec(),
            server_key_der: server_key.serialize_der(),
            other_ca_pem: cert_file("other-ca.pem", &other_ca.pem()),
            ca,
            ca_key: ca_key.serialize_pem(),
            other_ca,
            other_ca_key: other_ca_key.serialize_pem(),
            issued: AtomicUsize::new(0),
            dir,
        }
    }

    /// A client certificate issued by the test CA: CN `cn`, email SANs
    /// `emails`, extended key usage clientAuth, valid 2020 to 2099.
    pub fn client_cert(&self, cn: &str, emails: &[&str]) -> ClientCertFiles {
        self.issue(client_params(cn, emails), &self.ca, &self.ca_key)
    }

    /// The same, issued by the second CA ([`TestPki::other_ca_pem`]).
    pub fn other_ca_client_cert(&self, cn: &str, emails: &[&str]) -> ClientCertFiles {
        self.issue(
            client_params(cn, emails),
            &self.other_ca,
            &self.other_ca_key,
        )
    }

    fn issue(&self, p: CertificateParams, ca: &Certificate, ca_key: &str) -> ClientCertFiles {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let ca_key = KeyPair::from_pem(ca_key).expect("CA key PEM");
        let key = KeyPair::generate().expect("client key");
        let cert = p.signed_by(&key, ca, &ca_key).expect("sign client cert");
        let d = self.dir.path();
        ClientCertFiles {
            cert: write_pem(d, &format!("client-{n}.pem"), &cert.pem(), 0o644),
            key: write_pem(d, &format!("client-{n}.key"), &key.serialize_pem(), 0o600),
            der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

/// A rustls client config (ring provider, TLS 1.2 and 1.3) that trusts only
/// `ca_der`, for tests that speak FTPS from Rust.
pub fn client_config_trusting(ca_der: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .expect("add test CA to root store");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(ftpgate::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A rustls client config that accepts any server certificate, shows
/// `client` (if any) when asked for a certificate, and offers `alpn` (none
/// when empty): for tests of ftpgate's mutual TLS, ALPN and SNI checks.
pub fn client_config_with(
    client: Option<&ClientCertFiles>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let provider = ftpgate::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)));
    let mut cfg = match client {
        None => builder.with_no_client_auth(),
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(c.der.clone())],
                rustls::pki_types::PrivateKeyDer::Pkcs8(c.key_der.clone().into()),
            )
            .expect("client cert and key"),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A rustls client config that accepts any server certificate (signatures
/// are still checked). Only for the rig's readiness probes, which must work
/// whatever certificate a test gave the server.
pub fn accept_any_server_config() -> Arc<rustls::ClientConfig> {
    let provider = ftpgate::tls::provider();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth(),
    )
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn write_pem(dir: &Path, name: &str, pem: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, pem).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    fs::set_permissions(&p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// `openssl verify` (OpenSSL 3, as the servers and curl use) agrees with
    /// what each certificate is meant to be. Skipped without the command
    /// unless FTPGATE_REQUIRE_PEERS=1.
    fn openssl_verify(ca: &Path, cert: &Path, extra: &[&str]) -> (bool, String) {
        let out = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(ca)
            .args(extra)
            .arg(cert)
            .output()
            .expect("run openssl verify");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    #[test]
    fn tls_rig_certs_are_what_they_say() {
        if !Path::new("/usr/bin/openssl").exists() {
            assert!(
                !crate::peers::peers_required(),
                "FTPGATE_REQUIRE_PEERS=1 but /usr/bin/openssl is missing; run scripts/install-test-deps.sh"
            );
            println!("SKIP tls_rig_certs_are_what_they_say: no /usr/bin/openssl");
            return;
        }
        let pki = TestPki::new();
        for f in [
            &pki.ca_pem,
            &pki.server_cert,
            &pki.expired_cert,
            &pki.wrong_name_cert,
            &pki.self_signed_cert,
        ] {
            assert!(
                fs::read_to_string(f)
                    .unwrap()
                    .starts_with("-----BEGIN CERTIFICATE-----"),
                "{}",
                f.display()
            );
        }
        for f in [
            &pki.server_key,
            &pki.expired_key,
            &pki.wrong_name_key,
            &pki.self_signed_key,
        ] {
            assert!(
                fs::read_to_string(f)
                    .unwrap()
                    .starts_with("-----BEGIN PRIVATE KEY-----"),
                "not PKCS#8: {}",
                f.display()
            );
        }
        let combined = fs::read_to_string(&pki.server_combined).unwrap();
        assert!(combined.contains("BEGIN CERTIFICATE") && combined.contains("BEGIN PRIVATE KEY"));

        let ip4 = ["-verify_ip", "127.0.0.1"];
        let ip6 = ["-verify_ip", "::1"];
        let dns = ["-verify_hostname", "localhost"];
        for names in [&ip4, &ip6, &dns] {
            let (ok, text) = openssl_verify(&pki.ca_pem, &pki.server_cert, names);
            assert!(ok, "server cert {names:?}: {text}");
        }
        let (ok, text) = openssl_verify(&pki.ca_pem, &pki.expired_cert, &ip4);
        assert!(!ok && text.contains("expired"), "{text}");
        let (ok, text) = openssl_verify(&pki.ca_pem, &pki.wrong_name_cert, &ip4);
        assert!(!ok && text.contains("mismatch"), "{text}");
        let (ok, text) = openssl_verify(
            &pki.ca_pem,
            &pki.wrong_name_cert,
            &["-verify_hostname", WRONG_NAME],
        );
        assert!(ok, "wrong-name cert is valid for its own name: {text}");
        let (ok, text) = openssl_verify(&pki.ca_pem, &pki.self_signed_cert, &ip4);
        assert!(!ok && text.contains("self-signed"), "{text}");

        // Each key matches its certificate.
        for (cert, key) in [
            (&pki.server_cert, &pki.server_key),
            (&pki.expired_cert, &pki.expired_key),
            (&pki.wrong_name_cert, &pki.wrong_name_key),
            (&pki.self_signed_cert, &pki.self_signed_key),
        ] {
            let pubkey = |args: &[&str], f: &Path| {
                let out = Command::new("openssl").args(args).arg(f).output().unwrap();
                assert!(out.status.success(), "{args:?} {}", f.display());
                out.stdout
            };
            assert_eq!(
                pubkey(&["x509", "-noout", "-pubkey", "-in"], cert),
                pubkey(&["pkey", "-pubout", "-in"], key),
                "{} does not match {}",
                key.display(),
                cert.display()
            );
        }
    }
}
