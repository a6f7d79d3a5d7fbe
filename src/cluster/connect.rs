//! How to reach etcd, from cluster mode's settings: the TLS and password files read the same
//! way by the service, `verify` and `migrate-state`, and never shown in an error.

use std::path::Path;
use std::time::Duration;

use super::etcd::{Etcd, EtcdOptions, EtcdTls};
use crate::config::settings::ClusterSettings;
use crate::config::vars::Secret;

/// Largest credential or certificate file read.
const MAX_CREDENTIAL_BYTES: u64 = 1024 * 1024;

fn read_file(setting: &str, path: &Path) -> Result<Vec<u8>, String> {
    crate::fsread::read_regular(path, MAX_CREDENTIAL_BYTES).map_err(|e| {
        // Never the file's text: it is a key or a password.
        let why = match e {
            crate::fsread::ReadError::Io(e) => e.to_string(),
            other => format!("it {other}"),
        };
        format!("cannot read {setting} {}: {why}", path.display())
    })
}

/// The client options `settings` describe, with their files read; `request_timeout` bounds
/// one request to one member.
pub fn options(settings: &ClusterSettings, request_timeout: Duration) -> Result<EtcdOptions, String> {
    let ca_pem = settings.ca_file.as_deref().map(|p| read_file("VMSH_ETCD_CA_FILE", p)).transpose()?;
    let identity_pem = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => {
            let mut pem = read_file("VMSH_ETCD_CERT_FILE", cert)?;
            pem.push(b'\n');
            pem.extend(read_file("VMSH_ETCD_KEY_FILE", key)?);
            Some(pem)
        }
        _ => None,
    };
    let auth = match (&settings.user, &settings.password_file) {
        (Some(user), Some(file)) => {
            let text = String::from_utf8(read_file("VMSH_ETCD_PASSWORD_FILE", file)?)
                .map_err(|_| format!("VMSH_ETCD_PASSWORD_FILE {} is not UTF-8 text", file.display()))?;
            let password = text.lines().next().unwrap_or_default().trim_end_matches('\r').to_string();
            if password.is_empty() {
                return Err(format!(
                    "VMSH_ETCD_PASSWORD_FILE {}: the first line, the password, is empty",
                    file.display()
                ));
            }
            Some((user.clone(), Secret::new(password)))
        }
        _ => None,
    };
    Ok(EtcdOptions {
        endpoints: settings.endpoints.clone(),
        tls: EtcdTls { ca_pem, identity_pem },
        auth,
        request_timeout,
    })
}

/// A client for `settings`; nothing is sent yet.
pub fn client(settings: &ClusterSettings, request_timeout: Duration) -> Result<Etcd, String> {
    Etcd::new(options(settings, request_timeout)?).map_err(|e| format!("VMSH_ETCD_ENDPOINTS: {e}"))
}
