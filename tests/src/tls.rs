//! Certificates for TLS tests, generated fresh per test so nothing secret or
//! expiring is checked in. Everything is PEM, as the router and PostgreSQL
//! expect.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// Names every server certificate here is valid for: what tests connect to.
const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// Write a self-signed certificate for `localhost` and `127.0.0.1` to
/// `dir/server.crt` and its private key to `dir/server.key`.
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let names: Vec<String> = SERVER_NAMES.iter().map(|s| s.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).expect("generate self-signed certificate");
    write_pair(dir, "server", &certified.cert.pem(), &certified.key_pair.serialize_pem())
}

/// A throwaway certificate authority, for tests of certificate verification
/// in either direction (router verifying clients via `tls_ca`, clients
/// verifying the router).
pub struct TestCa {
    /// PEM certificate of the CA, to hand to whoever verifies.
    pub cert_path: PathBuf,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    /// Create a CA and write its certificate to `dir/ca.crt`.
    pub fn new(dir: &Path) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = common_name("pgdog-tests CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("generate CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        let cert_path = dir.join("ca.crt");
        std::fs::write(&cert_path, cert.pem()).expect("write ca.crt");
        TestCa { cert_path, cert, key }
    }

    /// A server certificate for `localhost` and `127.0.0.1` signed by this
    /// CA, written as `dir/<name>.crt` and `dir/<name>.key`.
    pub fn server_cert(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let names: Vec<String> = SERVER_NAMES.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server params");
        params.distinguished_name = common_name("localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(dir, name, params)
    }

    /// A client certificate with common name `user` (PostgreSQL's `cert`
    /// authentication matches the CN to the user name) signed by this CA,
    /// written as `dir/<user>.crt` and `dir/<user>.key`.
    pub fn client_cert(&self, dir: &Path, user: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name = common_name(user);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(dir, user, params)
    }

    fn issue(&self, dir: &Path, name: &str, params: CertificateParams) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("generate key");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("sign certificate");
        write_pair(dir, name, &cert.pem(), &key.serialize_pem())
    }
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// Write `<stem>.crt` and `<stem>.key`; the key is created 0600 because
/// libpq and PostgreSQL refuse group- or world-readable keys.
fn write_pair(dir: &Path, stem: &str, cert_pem: &str, key_pem: &str) -> (PathBuf, PathBuf) {
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    std::fs::write(&cert_path, cert_pem).unwrap_or_else(|e| panic!("write {}: {e}", cert_path.display()));
    let mut key_file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key_path)
        .unwrap_or_else(|e| panic!("create {}: {e}", key_path.display()));
    std::io::Write::write_all(&mut key_file, key_pem.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", key_path.display()));
    (cert_path, key_path)
}
