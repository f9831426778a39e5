//! TLS towards servers: `prefer`/`require` encrypt without verifying the
//! certificate (libpq's `sslmode=require`), `verify-full` checks the chain
//! against the Mozilla roots and the host name.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// Accepts any certificate: encryption against passive eavesdropping only,
/// which is exactly what `sslmode=require` promises.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Client config that encrypts without verifying.
pub fn unverified() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = provider();
            let config =
                ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().map(|b| {
                    b.dangerous()
                        .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                        .with_no_client_auth()
                });
            Arc::new(config.unwrap_or_else(|_| unreachable_config()))
        })
        .clone()
}

/// Client config that verifies the chain (against `ca`, a PEM bundle, or
/// the Mozilla roots) and the host name. Built once per configuration load.
pub fn verified(ca: Option<&str>) -> Result<Arc<ClientConfig>, String> {
    let roots = match ca {
        None => rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|e| format!("cannot read server_tls_ca {path}: {e}"))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut std::io::BufReader::new(file)) {
                let cert = cert.map_err(|e| format!("server_tls_ca {path}: {e}"))?;
                roots.add(cert).map_err(|e| format!("server_tls_ca {path}: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("server_tls_ca {path}: no PEM certificate found"));
            }
            roots
        }
    };
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The ring provider always supports the default protocol versions; this is
/// only here so a rustls change cannot turn into a panic.
fn unreachable_config() -> ClientConfig {
    ClientConfig::builder().with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth()
}
