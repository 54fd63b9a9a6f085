//! Throw-away certificate authorities for the TLS tests, generated in the test (nothing
//! checked in, nothing that expires under us): a CA, a server certificate for 127.0.0.1 and
//! localhost, and client certificates, written as PEM files the way an operator would mount
//! them.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct PemPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA that can issue server and client certificates into `dir`.
pub struct TestCa {
    name: String,
    dir: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (what clients and servers are told to trust).
    pub cert: PathBuf,
}

impl TestCa {
    /// A new CA called `name`, its certificate written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let cert = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&cert, issuer.pem()).expect("write CA certificate");
        TestCa {
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            issuer,
            cert,
        }
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by this CA.
    pub fn issue(&self, label: &str, names: &[&str]) -> PemPair {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, label);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        let pair = PemPair {
            cert: self.dir.join(format!("{}-{label}.pem", self.name)),
            key: self.dir.join(format!("{}-{label}.key", self.name)),
        };
        std::fs::write(&pair.cert, cert.pem()).expect("write certificate");
        std::fs::write(&pair.key, key.serialize_pem()).expect("write key");
        pair
    }

    /// A server certificate for this machine's loopback names.
    pub fn server(&self) -> PemPair {
        self.issue("server", &["127.0.0.1", "localhost"])
    }
}
