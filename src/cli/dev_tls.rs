//! `mezz dev --tls`: a throwaway CA, made afresh at every start, and the
//! certificates it signs for this machine's loopback address.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// Where `mezz dev --tls` wrote its files.
#[derive(Debug, Clone)]
pub struct DevTls {
    /// The CA's certificate: what clients trust (`MEZZ_TLS_CA`).
    pub ca: PathBuf,
    /// Certificate and key of every master and agent, for 127.0.0.1 and
    /// localhost, good for both ends of a connection.
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
    /// A client certificate for people's commands, for
    /// `--tls-client-auth required`.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Makes a CA and the certificates under `dir` (created 0700; keys 0600).
/// The CA's own key is never written: nothing else can be signed with it
/// once this returns.
pub fn make(dir: &Path) -> Result<DevTls> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    set_mode(dir, 0o700)?;
    let ca_key = KeyPair::generate().context("making the dev CA's key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("dev CA")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Mezzanine dev CA (throwaway)");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca.self_signed(&ca_key).context("signing the dev CA")?;

    let leaf = |name: &str, sans: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
        let key = KeyPair::generate().context("making a key")?;
        let mut params = CertificateParams::new(sans).context("certificate names")?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usages;
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .context("signing a certificate")?;
        anyhow::Ok((cert.pem(), key.serialize_pem()))
    };
    let (node_pem, node_key) = leaf(
        "mezz dev node",
        vec!["127.0.0.1".into(), "localhost".into()],
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?;
    let (client_pem, client_key) = leaf(
        "mezz dev user",
        Vec::new(),
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )?;
    let files = DevTls {
        ca: dir.join("ca.pem"),
        node_cert: dir.join("node.pem"),
        node_key: dir.join("node.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    };
    write(&files.ca, &ca.pem(), 0o644)?;
    write(&files.node_cert, &node_pem, 0o644)?;
    write(&files.node_key, &node_key, 0o600)?;
    write(&files.client_cert, &client_pem, 0o644)?;
    write(&files.client_key, &client_key, 0o600)?;
    Ok(files)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Writes `text` to `path` with `mode`, also when the file was already
/// there with another (a key must never be readable by others, not even
/// for a moment).
fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    // The umask may have taken bits away from a certificate's mode.
    set_mode(path, mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn keys_are_private_and_the_files_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = make(&dir.path().join("tls")).expect("make");
        for key in [&tls.node_key, &tls.client_key] {
            let mode = std::fs::metadata(key).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
        mezz_proto::tls::ServerTls::load(&mezz_proto::tls::ServerTlsFiles {
            cert: tls.node_cert.clone(),
            key: tls.node_key.clone(),
            ca: Some(tls.ca.clone()),
            client_auth: mezz_proto::tls::ClientAuth::Required,
        })
        .expect("server side loads");
        mezz_proto::tls::ClientTls::load(&tls.ca, Some(&tls.client_cert), Some(&tls.client_key))
            .expect("client side loads");
        // A key that is not the certificate's is named as such.
        let e =
            mezz_proto::tls::ClientTls::load(&tls.ca, Some(&tls.node_cert), Some(&tls.client_key))
                .expect_err("mismatch");
        assert!(
            e.to_string().contains("does not belong to the certificate"),
            "{e}"
        );
        // Made again, the files are replaced, keys still private.
        make(&dir.path().join("tls")).expect("make again");
        let mode = std::fs::metadata(&tls.node_key)
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
