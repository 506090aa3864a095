//! Cluster membership as certificates: a cluster CA, and per node a key and a
//! certificate signed by it (CN = node id, OU = node name). Both ends of every
//! member connection present a certificate chaining to the CA (TLS 1.3 only);
//! anything else fails the handshake. The one exception is the join ALPN, under
//! which a node without a certificate may ask to be admitted (see [`crate::join`]).
//!
//! Files in a node's `tls/` directory: `ca.pem` (CA certificate), `ca.key`
//! (CA key: only on nodes allowed to admit new members), `node.pem`, `node.key`.

use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::TransportError;

/// Versioned application protocol of members; bump on any incompatible change.
pub const ALPN: &[u8] = b"hoody/2";
/// Protocol of certificate-less nodes asking to join (one request, small frames).
pub const JOIN_ALPN: &[u8] = b"hoody-join/1";

/// The name every node certificate carries and every client verifies: membership
/// is proven by the CA's signature, not by a host name.
pub const CLUSTER_SERVER_NAME: &str = "hoody.cluster";

fn tls_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

/// A node's credentials: its certificate chain and key, and the CA it trusts.
#[derive(Clone)]
pub struct ClusterIdentity {
    pub ca_cert_pem: String,
    pub node_cert_pem: String,
    pub node_key_pem: String,
}

fn ca_params() -> Result<CertificateParams, TransportError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "hoody cluster CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// Creates a new cluster CA: `(certificate PEM, key PEM)`.
pub fn new_cluster_ca() -> Result<(String, String), TransportError> {
    let key = KeyPair::generate().map_err(tls_err)?;
    let cert = ca_params()?.self_signed(&key).map_err(tls_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The certificate parameters of a member: CN = node id, OU = node name, the
/// cluster's server name, usable both ways.
fn node_params(node_id: &str, node_name: &str) -> Result<CertificateParams, TransportError> {
    let mut params = CertificateParams::new(vec![CLUSTER_SERVER_NAME.to_string()]).map_err(tls_err)?;
    params.distinguished_name.push(DnType::CommonName, node_id);
    params.distinguished_name.push(DnType::OrganizationalUnitName, node_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

/// Signs a member certificate for `public_key` with the CA.
fn sign_member(ca_key_pem: &str, node_id: &str, node_name: &str, public_key: &impl rcgen::PublicKeyData) -> Result<String, TransportError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(tls_err)?;
    // Re-deriving the issuer from the same parameters and key gives the same subject
    // and key identifier, so the signature chains to the stored CA certificate.
    let issuer = ca_params()?.self_signed(&ca_key).map_err(tls_err)?;
    Ok(node_params(node_id, node_name)?.signed_by(public_key, &issuer, &ca_key).map_err(tls_err)?.pem())
}

/// Issues a node certificate signed by the CA whose key is `ca_key_pem`.
pub fn issue_node_identity(ca_cert_pem: &str, ca_key_pem: &str, node_id: &str, node_name: &str) -> Result<ClusterIdentity, TransportError> {
    let key = KeyPair::generate().map_err(tls_err)?;
    let cert = sign_member(ca_key_pem, node_id, node_name, &key)?;
    Ok(ClusterIdentity { ca_cert_pem: ca_cert_pem.to_string(), node_cert_pem: cert, node_key_pem: key.serialize_pem() })
}

/// A joining node's new key and its certificate signing request: `(key PEM, CSR PEM)`.
/// The key never leaves the node; the CA signs the CSR's public key.
pub fn new_node_key_and_csr(node_id: &str, node_name: &str) -> Result<(String, String), TransportError> {
    let key = KeyPair::generate().map_err(tls_err)?;
    let csr = node_params(node_id, node_name)?.serialize_request(&key).map_err(tls_err)?;
    Ok((key.serialize_pem(), csr.pem().map_err(tls_err)?))
}

/// Signs the public key of `csr_pem` as member `node_id`/`node_name`. Only the
/// key is taken from the request: names and usages are the CA's own choice, so
/// a crafted request cannot ask for more.
pub fn sign_node_csr(ca_key_pem: &str, csr_pem: &str, node_id: &str, node_name: &str) -> Result<String, TransportError> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(tls_err)?;
    sign_member(ca_key_pem, node_id, node_name, &csr.public_key)
}

impl ClusterIdentity {
    /// Loads `ca.pem`, `node.pem`, `node.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, TransportError> {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).map_err(|e| TransportError::Tls(format!("{}: {e}", dir.join(name).display())));
        Ok(ClusterIdentity {
            ca_cert_pem: read("ca.pem")?,
            node_cert_pem: read("node.pem")?,
            node_key_pem: read("node.key")?,
        })
    }

    /// Writes the identity into `dir` (keys with mode 0600).
    pub fn save(&self, dir: &Path) -> Result<(), TransportError> {
        std::fs::create_dir_all(dir)?;
        write_file(&dir.join("ca.pem"), &self.ca_cert_pem, 0o644)?;
        write_file(&dir.join("node.pem"), &self.node_cert_pem, 0o644)?;
        write_file(&dir.join("node.key"), &self.node_key_pem, 0o600)?;
        Ok(())
    }

    fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TransportError> {
        rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(tls_err)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TransportError> {
        rustls_pemfile::private_key(&mut self.node_key_pem.as_bytes())
            .map_err(tls_err)?
            .ok_or_else(|| tls_err("no private key in node.key"))
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TransportError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in Self::certs(&self.ca_cert_pem)? {
            roots.add(cert).map_err(tls_err)?;
        }
        Ok(Arc::new(roots))
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// The chain a node presents: its certificate, then the CA's, so a joining
    /// node can find the CA by its fingerprint.
    fn chain(&self) -> Result<Vec<CertificateDer<'static>>, TransportError> {
        let mut chain = Self::certs(&self.node_cert_pem)?;
        if chain.is_empty() {
            return Err(tls_err("no certificate in node.pem"));
        }
        chain.extend(Self::certs(&self.ca_cert_pem)?);
        Ok(chain)
    }

    /// TLS for accepting peers: a client certificate from the cluster CA is required.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TransportError> {
        self.server_config_with_join(false)
    }

    /// As [`Self::server_config`]; with `join`, also offers [`JOIN_ALPN`] and lets
    /// clients without a certificate finish the handshake. The endpoint then closes
    /// any certificate-less connection that did not choose the join protocol.
    pub fn server_config_with_join(&self, join: bool) -> Result<rustls::ServerConfig, TransportError> {
        let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots()?, Self::provider());
        if join {
            verifier = verifier.allow_unauthenticated();
        }
        let mut config = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier.build().map_err(tls_err)?)
            .with_single_cert(self.chain()?, self.key()?)
            .map_err(tls_err)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        if join {
            config.alpn_protocols.push(JOIN_ALPN.to_vec());
        }
        Ok(config)
    }

    /// TLS for calling peers: the peer must show a certificate from the cluster CA.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TransportError> {
        let mut config = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain()?, self.key()?)
            .map_err(tls_err)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

/// The verified identity in a node certificate: `(node id, node name)` from its
/// CN and OU.
pub fn node_names(cert_der: &[u8]) -> Result<(String, String), TransportError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| tls_err(format!("peer certificate: {e}")))?;
    let subject = cert.subject();
    let text = |attr: Option<&x509_parser::x509::AttributeTypeAndValue>| attr.and_then(|a| a.as_str().ok()).map(str::to_string);
    let node_id = text(subject.iter_common_name().next()).ok_or_else(|| tls_err("peer certificate has no CN"))?;
    let node_name = text(subject.iter_organizational_unit().next()).unwrap_or_default();
    Ok((node_id, node_name))
}

/// Hex SHA-256 of the CA certificate's DER: what a joining node is told out of band.
pub fn ca_fingerprint(ca_cert_pem: &str) -> Result<String, TransportError> {
    let certs = ClusterIdentity::certs(ca_cert_pem)?;
    let ca = certs.first().ok_or_else(|| tls_err("no certificate in the CA PEM"))?;
    Ok(fingerprint_der(ca))
}

pub(crate) fn fingerprint_der(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// TLS for a node without a certificate that asks to join: it trusts the server
/// only if the server's chain holds a CA whose fingerprint it was given, and the
/// server's certificate chains to that CA. The verified CA lands in the returned cell.
pub(crate) fn join_client_config(ca_fingerprint: &str) -> Result<(rustls::ClientConfig, VerifiedCa), TransportError> {
    let found = Arc::new(std::sync::Mutex::new(None));
    let verifier = FingerprintVerifier {
        fingerprint: ca_fingerprint.trim().to_ascii_lowercase(),
        provider: ClusterIdentity::provider(),
        found: found.clone(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(ClusterIdentity::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![JOIN_ALPN.to_vec()];
    Ok((config, found))
}

/// Where the join verifier leaves the CA certificate it verified the server with.
pub(crate) type VerifiedCa = Arc<std::sync::Mutex<Option<CertificateDer<'static>>>>;

#[derive(Debug)]
struct FingerprintVerifier {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
    found: VerifiedCa,
}

impl rustls::client::danger::ServerCertVerifier for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint_der(c) == self.fingerprint)
            .ok_or_else(|| rustls::Error::General("no CA with the expected fingerprint in the server's chain".into()))?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verified = webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        *self.found.lock().expect("join CA cell") = Some(ca.clone().into_owned());
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), TransportError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_certificates_name_the_node_and_the_ca_has_a_stable_fingerprint() {
        let (ca_pem, ca_key) = new_cluster_ca().unwrap();
        let id = issue_node_identity(&ca_pem, &ca_key, "node-1", "alpha").unwrap();
        let chain = id.chain().unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(node_names(&chain[0]).unwrap(), ("node-1".to_string(), "alpha".to_string()));
        let fp = ca_fingerprint(&ca_pem).unwrap();
        assert_eq!(fp.len(), 64);
        assert_eq!(fp, fingerprint_der(&chain[1]));
        assert!(node_names(b"not a certificate").is_err());
        assert!(ca_fingerprint("no pem here").is_err());
    }

    #[test]
    fn a_csr_is_signed_for_its_key_with_the_names_the_ca_chooses() {
        let (ca_pem, ca_key) = new_cluster_ca().unwrap();
        let (key_pem, csr_pem) = new_node_key_and_csr("asked-id", "asked-name").unwrap();
        let cert_pem = sign_node_csr(&ca_key, &csr_pem, "given-id", "given-name").unwrap();
        let id = ClusterIdentity { ca_cert_pem: ca_pem, node_cert_pem: cert_pem, node_key_pem: key_pem };
        // The key the node kept matches the certificate (rustls checks the pair).
        id.server_config().unwrap();
        id.client_config().unwrap();
        assert_eq!(node_names(&id.chain().unwrap()[0]).unwrap(), ("given-id".to_string(), "given-name".to_string()));
        assert!(sign_node_csr(&ca_key, "not a csr", "a", "b").is_err());
    }
}
