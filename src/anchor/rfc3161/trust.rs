//! Whether a token was really signed by a TSA the operator trusts: the CMS signature (RFC
//! 5652 section 5.4), the signer certificate's chain up to a certificate of the trust bundle
//! as of genTime, and the signer's extended key usage (RFC 3161 section 2.3).
//!
//! Supported: RSA PKCS#1 v1.5 and ECDSA on P-256 / P-384, with SHA-256, SHA-384 or SHA-512.
//! No revocation checking: a trust bundle is a list of CAs, not a PKI client.

use cms::signed_data::{SignerIdentifier, SignerInfo};
use der::asn1::OctetString;
use der::oid::ObjectIdentifier;
use der::{Decode, Encode};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rsa::pkcs8::DecodePublicKey;
use sha2::Digest;
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::spki::SubjectPublicKeyInfoOwned;

use super::asn1;
use super::protocol::ID_SHA256;
use crate::clock::rfc3339;

const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SIGNING_CERTIFICATE_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
/// id-ct-TSTInfo: the content type of a time-stamp token's payload.
pub(super) const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_KP_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
const ID_CE_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const ID_CE_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const ID_CE_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const ID_CE_SUBJECT_KEY_IDENTIFIER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_WITH_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// Longest chain followed from the signer to the bundle (intermediates only).
const MAX_INTERMEDIATES: usize = 6;

/// Most certificate signatures checked while looking for a chain: a token can carry many
/// certificates with the same names, and trying every path through them would let a hostile
/// reply keep the scheduler busy.
const MAX_SIGNATURE_CHECKS: usize = 32;

/// The CA certificates a token's signer must chain to.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    certs: Vec<Certificate>,
}

impl TrustBundle {
    /// Reads every certificate of a PEM bundle; a bundle without any is an error.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let certs = pem_certificates(pem)?;
        if certs.is_empty() {
            return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
        }
        Ok(Self { certs })
    }

    /// How many certificates it holds.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether it holds none (never, once built).
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

/// Every `CERTIFICATE` block of a PEM text (other blocks, such as keys, and text between
/// blocks are skipped). Parsed here because `x509-cert` 0.2's `load_pem_chain` panics on
/// some inputs (an empty one, for instance).
fn pem_certificates(pem: &[u8]) -> Result<Vec<Certificate>, String> {
    use base64::Engine as _;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::str::from_utf8(pem).map_err(|_| "not a PEM text (not UTF-8)".to_string())?;
    let mut certs = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let body_and_more = rest.get(start + BEGIN.len()..).unwrap_or_default();
        let end = body_and_more.find(END).ok_or_else(|| format!("certificate {} has no END line", certs.len() + 1))?;
        let body: String = body_and_more.get(..end).unwrap_or_default().split_whitespace().collect();
        let n = certs.len() + 1;
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|e| format!("certificate {n} is not valid base64: {e}"))?;
        certs.push(
            Certificate::from_der(&der).map_err(|e| format!("certificate {n} is not an X.509 certificate: {e}"))?,
        );
        rest = body_and_more.get(end + END.len()..).unwrap_or_default();
    }
    Ok(certs)
}

/// The digests signatures are made over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Hash {
    fn from_oid(oid: &ObjectIdentifier) -> Result<Self, String> {
        match *oid {
            ID_SHA256 => Ok(Hash::Sha256),
            ID_SHA384 => Ok(Hash::Sha384),
            ID_SHA512 => Ok(Hash::Sha512),
            _ => Err(format!("unsupported digest algorithm {oid} (SHA-256, SHA-384 and SHA-512 are)")),
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    RsaPkcs1,
    Ecdsa,
}

/// The scheme and hash of a signature algorithm; `digest` is the hash a bare key algorithm
/// (`rsaEncryption`, `id-ecPublicKey`, as CMS signers often write) is paired with.
fn signature_algorithm(oid: &ObjectIdentifier, digest: Option<Hash>) -> Result<(Scheme, Hash), String> {
    let bare = |scheme| digest.map(|h| (scheme, h)).ok_or_else(|| format!("signature algorithm {oid} names no digest"));
    match *oid {
        RSA_ENCRYPTION => bare(Scheme::RsaPkcs1),
        SHA256_WITH_RSA => Ok((Scheme::RsaPkcs1, Hash::Sha256)),
        SHA384_WITH_RSA => Ok((Scheme::RsaPkcs1, Hash::Sha384)),
        SHA512_WITH_RSA => Ok((Scheme::RsaPkcs1, Hash::Sha512)),
        ID_EC_PUBLIC_KEY => bare(Scheme::Ecdsa),
        ECDSA_WITH_SHA256 => Ok((Scheme::Ecdsa, Hash::Sha256)),
        ECDSA_WITH_SHA384 => Ok((Scheme::Ecdsa, Hash::Sha384)),
        ECDSA_WITH_SHA512 => Ok((Scheme::Ecdsa, Hash::Sha512)),
        _ => Err(format!("unsupported signature algorithm {oid} (RSA PKCS#1 v1.5 and ECDSA with SHA-256/384/512 are)")),
    }
}

/// Checks `signature` over `message` with the key in `spki`.
fn verify_signature(
    spki: &SubjectPublicKeyInfoOwned,
    (scheme, hash): (Scheme, Hash),
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let digest = hash.digest(message);
    let bad = || "the signature does not verify".to_string();
    match scheme {
        Scheme::RsaPkcs1 => {
            if spki.algorithm.oid != RSA_ENCRYPTION {
                return Err(format!("an RSA signature, but the key is of type {}", spki.algorithm.oid));
            }
            let der = spki.to_der().map_err(|e| format!("cannot encode the public key: {e}"))?;
            let key = rsa::RsaPublicKey::from_public_key_der(&der).map_err(|e| format!("unusable RSA key: {e}"))?;
            let padding = match hash {
                Hash::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                Hash::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                Hash::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
            };
            key.verify(padding, &digest, signature).map_err(|_| bad())
        }
        Scheme::Ecdsa => {
            if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
                return Err(format!("an ECDSA signature, but the key is of type {}", spki.algorithm.oid));
            }
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .ok_or("an EC key without a named curve")?;
            let point = spki.subject_public_key.raw_bytes();
            match curve {
                SECP256R1 => {
                    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| "unusable P-256 key")?;
                    let sig = p256::ecdsa::Signature::from_der(signature).map_err(|_| "malformed ECDSA signature")?;
                    key.verify_prehash(&digest, &sig).map_err(|_| bad())
                }
                SECP384R1 => {
                    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| "unusable P-384 key")?;
                    let sig = p384::ecdsa::Signature::from_der(signature).map_err(|_| "malformed ECDSA signature")?;
                    key.verify_prehash(&digest, &sig).map_err(|_| bad())
                }
                other => Err(format!("unsupported curve {other} (P-256 and P-384 are)")),
            }
        }
    }
}

/// The one value of a signed attribute, if present.
fn attribute<'a>(si: &'a SignerInfo, oid: &ObjectIdentifier) -> Result<Option<&'a der::Any>, String> {
    let Some(attrs) = &si.signed_attrs else { return Ok(None) };
    let mut found = attrs.iter().filter(|a| a.oid == *oid);
    let Some(attr) = found.next() else { return Ok(None) };
    if found.next().is_some() || attr.values.len() != 1 {
        return Err(format!("signed attribute {oid} must occur once, with one value"));
    }
    Ok(attr.values.iter().next())
}

/// The parts of a time-stamp token that its verification needs, as received.
#[derive(Debug, Clone)]
pub(super) struct SignedToken {
    /// The TSTInfo: the encapsulated content's octets, which the message digest covers.
    pub tst_info: Vec<u8>,
    /// DER of each certificate the token carries.
    pub certificates: Vec<Vec<u8>>,
    /// Every SignerInfo.
    pub signers: Vec<Signer>,
}

/// One SignerInfo.
#[derive(Debug, Clone)]
pub(super) struct Signer {
    /// The SignerInfo, decoded.
    pub info: SignerInfo,
    /// Its signed attributes exactly as received, tagged as a SET (what is signed).
    pub signed_attrs: Option<Vec<u8>>,
}

fn extension<'a>(
    cert: &'a Certificate,
    oid: &ObjectIdentifier,
) -> Result<Option<&'a x509_cert::ext::Extension>, String> {
    let mut found = cert.tbs_certificate.extensions.iter().flatten().filter(|e| e.extn_id == *oid);
    let first = found.next();
    if first.is_some() && found.next().is_some() {
        return Err(format!("certificate {} has extension {oid} twice", subject(cert)));
    }
    Ok(first)
}

fn subject(cert: &Certificate) -> String {
    let s = cert.tbs_certificate.subject.to_string();
    if s.is_empty() { "(empty subject)".into() } else { s }
}

/// Whether `cert` is the one a SignerIdentifier names.
fn is_signer(cert: &Certificate, sid: &SignerIdentifier) -> bool {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => {
            cert.tbs_certificate.issuer == ias.issuer && cert.tbs_certificate.serial_number == ias.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            matches!(extension(cert, &ID_CE_SUBJECT_KEY_IDENTIFIER), Ok(Some(ext))
                if SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes()).is_ok_and(|k| k == *ski))
        }
    }
}

/// Checks that `cert` was within its validity period at `at_ms`.
fn valid_at(cert: &Certificate, at_ms: i64) -> Result<(), String> {
    let v = &cert.tbs_certificate.validity;
    let ms = |t: x509_cert::time::Time| i64::try_from(t.to_unix_duration().as_millis()).unwrap_or(i64::MAX);
    let (from, until) = (ms(v.not_before), ms(v.not_after));
    if at_ms < from || at_ms > until {
        return Err(format!(
            "certificate {} was not valid at genTime {} (valid from {} to {})",
            subject(cert),
            rfc3339(at_ms),
            rfc3339(from),
            rfc3339(until)
        ));
    }
    Ok(())
}

/// Checks that `issuer` may issue certificates: a CA (basicConstraints cA) whose key usage,
/// if stated, includes keyCertSign.
fn may_issue(issuer: &Certificate, require_ca: bool) -> Result<(), String> {
    let ca = match extension(issuer, &ID_CE_BASIC_CONSTRAINTS)? {
        Some(ext) => BasicConstraints::from_der(ext.extn_value.as_bytes()).is_ok_and(|b| b.ca),
        None => false,
    };
    if require_ca && !ca {
        return Err(format!("certificate {} is not a CA (basicConstraints cA is not set)", subject(issuer)));
    }
    if let Some(ext) = extension(issuer, &ID_CE_KEY_USAGE)? {
        let usage = KeyUsage::from_der(ext.extn_value.as_bytes())
            .map_err(|e| format!("certificate {}: unreadable key usage: {e}", subject(issuer)))?;
        if !usage.0.contains(KeyUsages::KeyCertSign) {
            return Err(format!("certificate {} may not sign certificates (keyUsage)", subject(issuer)));
        }
    }
    Ok(())
}

/// Checks that `issuer` signed `cert`.
fn signed_by(cert: &Certificate, issuer: &Certificate) -> Result<(), String> {
    let tbs = cert.tbs_certificate.to_der().map_err(|e| format!("cannot encode certificate {}: {e}", subject(cert)))?;
    let alg = signature_algorithm(&cert.signature_algorithm.oid, None)?;
    let sig = cert.signature.as_bytes().ok_or("a certificate signature with unused bits")?;
    verify_signature(&issuer.tbs_certificate.subject_public_key_info, alg, &tbs, sig)
        .map_err(|e| format!("certificate {} is not signed by {}: {e}", subject(cert), subject(issuer)))
}

/// A search for a path from a certificate to the bundle.
struct PathSearch<'a> {
    /// Intermediate certificates to build the path from (those the token carries).
    pool: &'a [Certificate],
    /// The trust anchors.
    bundle: &'a [Certificate],
    /// The instant every certificate on the path must be valid at, Unix ms.
    at_ms: i64,
    /// Signature checks left.
    budget: usize,
    /// Why each candidate issuer was refused.
    why: Vec<String>,
}

impl PathSearch<'_> {
    /// Checks that `issuer` signed `cert`, within the budget.
    fn issued(&mut self, cert: &Certificate, issuer: &Certificate, require_ca: bool) -> Result<(), String> {
        valid_at(issuer, self.at_ms)?;
        may_issue(issuer, require_ca)?;
        if self.budget == 0 {
            return Err(format!("gave up after {MAX_SIGNATURE_CHECKS} signature checks"));
        }
        self.budget -= 1;
        signed_by(cert, issuer)
    }

    /// Whether `cert` (at `depth` intermediates from the signer) leads to the bundle.
    fn reaches_bundle(&mut self, cert: &Certificate, depth: usize) -> bool {
        if self.bundle.contains(cert) {
            return true;
        }
        let issuer_name = &cert.tbs_certificate.issuer;
        let bundle = self.bundle;
        for anchor in bundle.iter().filter(|a| a.tbs_certificate.subject == *issuer_name) {
            // Trust anchors need not be marked as CAs (old roots are not), but a stated key
            // usage must allow certificate signing.
            match self.issued(cert, anchor, false) {
                Ok(()) => return true,
                Err(e) => self.why.push(e),
            }
        }
        if depth >= MAX_INTERMEDIATES {
            self.why.push(format!("no path within {MAX_INTERMEDIATES} intermediate certificates"));
            return false;
        }
        let pool = self.pool;
        for next in pool.iter().filter(|c| c.tbs_certificate.subject == *issuer_name && *c != cert) {
            match self.issued(cert, next, true) {
                Ok(()) if self.reaches_bundle(next, depth + 1) => return true,
                Ok(()) => {}
                Err(e) => self.why.push(e),
            }
        }
        false
    }
}

/// Checks that `cert` chains to a certificate of `bundle` through `pool`, every certificate
/// valid at `at_ms`.
fn chain_to_bundle(cert: &Certificate, pool: &[Certificate], bundle: &[Certificate], at_ms: i64) -> Result<(), String> {
    let mut search = PathSearch { pool, bundle, at_ms, budget: MAX_SIGNATURE_CHECKS, why: Vec::new() };
    if search.reaches_bundle(cert, 0) {
        return Ok(());
    }
    let mut why = search.why;
    why.dedup();
    let detail = if why.is_empty() {
        format!("its issuer {} is not in the bundle", cert.tbs_certificate.issuer)
    } else {
        why.join("; ")
    };
    Err(format!("certificate {} does not chain to the trust bundle: {detail}", subject(cert)))
}

/// Checks that the signer certificate has exactly one extended key usage,
/// id-kp-timeStamping, marked critical (RFC 3161 section 2.3).
fn check_time_stamping_usage(cert: &Certificate) -> Result<(), String> {
    let name = subject(cert);
    let ext = extension(cert, &ID_CE_EXT_KEY_USAGE)?.ok_or_else(|| {
        format!("signer certificate {name} has no extended key usage; a TSA certificate needs timeStamping, critical")
    })?;
    if !ext.critical {
        return Err(format!("signer certificate {name}: its extended key usage is not marked critical"));
    }
    let eku = ExtendedKeyUsage::from_der(ext.extn_value.as_bytes())
        .map_err(|e| format!("signer certificate {name}: unreadable extended key usage: {e}"))?;
    if eku.0 != [ID_KP_TIME_STAMPING] {
        let list: Vec<String> = eku.0.iter().map(|o| o.to_string()).collect();
        return Err(format!(
            "signer certificate {name} has extended key usage {} instead of only timeStamping ({ID_KP_TIME_STAMPING})",
            list.join(", ")
        ));
    }
    Ok(())
}

/// When the token carries an ESS signing-certificate-v2 attribute (RFC 5035), its first entry
/// must be the signer certificate: this binds the signature to that certificate, not just to
/// its key. (Version 1 of the attribute hashes with SHA-1 and is not checked.)
fn check_signing_certificate(si: &SignerInfo, signer: &Certificate) -> Result<(), String> {
    let Some(value) = attribute(si, &ID_SIGNING_CERTIFICATE_V2)? else { return Ok(()) };
    let bad = |e: String| format!("signing-certificate-v2 attribute: {e}");
    let der = value.to_der().map_err(|e| bad(e.to_string()))?;
    let outer = asn1::read_only(&der, asn1::SEQUENCE, "SigningCertificateV2").map_err(bad)?;
    let certs = asn1::children(outer.content).map_err(bad)?;
    let first_list = certs.first().filter(|t| t.tag == asn1::SEQUENCE).ok_or_else(|| bad("no certificates".into()))?;
    let ids = asn1::children(first_list.content).map_err(bad)?;
    let id = ids.first().filter(|t| t.tag == asn1::SEQUENCE).ok_or_else(|| bad("no certificate id".into()))?;
    let fields = asn1::children(id.content).map_err(bad)?;
    // ESSCertIDv2 ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier DEFAULT sha256, certHash OCTET STRING, … }
    let (hash, cert_hash) = match fields.as_slice() {
        [alg, h, ..] if alg.tag == asn1::SEQUENCE => {
            let alg = x509_cert::spki::AlgorithmIdentifierOwned::from_der(alg.whole).map_err(|e| bad(e.to_string()))?;
            (Hash::from_oid(&alg.oid).map_err(bad)?, h)
        }
        [h, ..] => (Hash::Sha256, h),
        [] => return Err(bad("empty certificate id".into())),
    };
    let cert_hash = OctetString::from_der(cert_hash.whole).map_err(|e| bad(e.to_string()))?;
    let cert_der = signer.to_der().map_err(|e| bad(e.to_string()))?;
    if hash.digest(&cert_der) != cert_hash.as_bytes() {
        return Err("the signing-certificate-v2 attribute names another certificate than the signer's".into());
    }
    Ok(())
}

/// The certificate that signed a token, as the driver reports it: when it expires, and what
/// tells it from its successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SignerCertificate {
    /// Its subject.
    pub subject: String,
    /// Its notAfter, Unix ms.
    pub not_after_ms: i64,
    /// A digest of it (hex), the same for the same certificate.
    pub id: String,
}

/// The certificate of a token's one signer, found among those the token carries, then in
/// `bundle`; `None` when there is not exactly one signer or its certificate is in neither.
/// Only read, not checked: whether it is trusted is [`verify_signed_token`]'s question.
pub(super) fn signer_certificate(token: &SignedToken, bundle: Option<&TrustBundle>) -> Option<SignerCertificate> {
    let [signer] = token.signers.as_slice() else { return None };
    let carried = token.certificates.iter().filter_map(|der| Certificate::from_der(der).ok());
    let trusted = bundle.into_iter().flat_map(|b| b.certs.iter().cloned());
    let cert = carried.chain(trusted).find(|c| is_signer(c, &signer.info.sid))?;
    let not_after = cert.tbs_certificate.validity.not_after.to_unix_duration().as_millis();
    let der = cert.to_der().ok()?;
    Some(SignerCertificate {
        subject: subject(&cert),
        not_after_ms: i64::try_from(not_after).unwrap_or(i64::MAX),
        id: crate::model::digest::to_hex(&sha2::Sha256::digest(&der)),
    })
}

/// Verifies a token's signature: the one signer's signature over its signed attributes, the
/// message digest of the TSTInfo, and the signer's certificate: time-stamping usage and a
/// chain to `bundle`, all as of `at_ms` (genTime).
pub(super) fn verify_signed_token(token: &SignedToken, at_ms: i64, bundle: &TrustBundle) -> Result<(), String> {
    let (si, signed_attrs) = match token.signers.as_slice() {
        [s] => (&s.info, s.signed_attrs.as_deref()),
        other => return Err(format!("a time-stamp token has exactly one signer, this one has {}", other.len())),
    };
    let digest = Hash::from_oid(&si.digest_alg.oid)?;
    let signed_attrs = signed_attrs.ok_or("the signer has no signed attributes (RFC 3161 requires them)")?;
    let content_type = attribute(si, &ID_CONTENT_TYPE)?.ok_or("the signed attributes lack a content type")?;
    if content_type.decode_as::<ObjectIdentifier>().ok() != Some(ID_CT_TST_INFO) {
        return Err("the signed content type is not id-ct-TSTInfo".into());
    }
    let message_digest = attribute(si, &ID_MESSAGE_DIGEST)?.ok_or("the signed attributes lack a message digest")?;
    let message_digest =
        message_digest.decode_as::<OctetString>().map_err(|e| format!("unreadable message digest: {e}"))?;
    if message_digest.as_bytes() != digest.digest(&token.tst_info) {
        return Err("the signed message digest does not match the TSTInfo (the token was altered)".into());
    }
    let carried = token
        .certificates
        .iter()
        .map(|der| Certificate::from_der(der).map_err(|e| format!("a certificate in the token is unreadable: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let signer = carried
        .iter()
        .chain(bundle.certs.iter())
        .find(|c| is_signer(c, &si.sid))
        .ok_or("the signer's certificate is neither in the token nor in the trust bundle")?;
    let alg = signature_algorithm(&si.signature_algorithm.oid, Some(digest))?;
    verify_signature(&signer.tbs_certificate.subject_public_key_info, alg, signed_attrs, si.signature.as_bytes())
        .map_err(|e| format!("the token's signature by {}: {e}", subject(signer)))?;
    check_signing_certificate(si, signer)?;
    check_time_stamping_usage(signer)?;
    valid_at(signer, at_ms)?;
    chain_to_bundle(signer, &carried, &bundle.certs, at_ms).map_err(|e| format!("signer {e}"))
}
#[cfg(test)]
mod tests {
    use super::*;

    fn cert(pem: &[u8]) -> Certificate {
        pem_certificates(pem).expect("pem").remove(0)
    }

    #[test]
    fn the_signer_needs_exactly_the_critical_time_stamping_usage() {
        let e = check_time_stamping_usage(&cert(include_bytes!("testdata/eku-noncritical.pem"))).expect_err("nc");
        assert!(e.contains("not marked critical"), "{e}");
        let e = check_time_stamping_usage(&cert(include_bytes!("testdata/eku-two.pem"))).expect_err("two");
        assert!(e.contains("instead of only timeStamping"), "{e}");
        let e = check_time_stamping_usage(&cert(include_bytes!("testdata/eku-none.pem"))).expect_err("none");
        assert!(e.contains("no extended key usage"), "{e}");
    }

    #[test]
    fn certificates_chain_to_their_issuer_only() {
        let ca = cert(include_bytes!("testdata/ca.pem"));
        let inter = cert(include_bytes!("testdata/inter.pem"));
        let other = cert(include_bytes!("testdata/other-ca.pem"));
        signed_by(&inter, &ca).expect("RSA signature of the root");
        signed_by(&ca, &ca).expect("self-signed");
        assert!(signed_by(&inter, &other).is_err());
        assert!(signed_by(&ca, &inter).is_err());
        chain_to_bundle(&inter, &[], std::slice::from_ref(&ca), 1_800_000_000_000).expect("issued by the root");
        let e = chain_to_bundle(&inter, &[], std::slice::from_ref(&other), 1_800_000_000_000).expect_err("other CA");
        assert!(e.contains("its issuer CN=Fixture Root CA is not in the bundle"), "{e}");
        // Outside the validity period (before the fixtures were made).
        let e = chain_to_bundle(&inter, &[], std::slice::from_ref(&ca), 1_000_000_000_000).expect_err("too early");
        assert!(e.contains("was not valid at genTime"), "{e}");
        // A pool of look-alike intermediates costs a bounded number of signature checks.
        let look_alikes = vec![ca.clone(); 50];
        let e = chain_to_bundle(&inter, &look_alikes, std::slice::from_ref(&other), 1_800_000_000_000)
            .expect_err("no path");
        assert!(e.contains(&format!("gave up after {MAX_SIGNATURE_CHECKS} signature checks")), "{e}");
    }

    #[test]
    fn the_signing_certificate_attribute_must_name_the_signer() {
        let token = super::super::token::split(include_bytes!("testdata/token-ec.der")).expect("token");
        let si = &token.signers[0].info;
        let carried: Vec<Certificate> =
            token.certificates.iter().map(|d| Certificate::from_der(d).expect("certificate")).collect();
        let signer = carried.iter().find(|c| is_signer(c, &si.sid)).expect("the signer's certificate is carried");
        assert!(attribute(si, &ID_SIGNING_CERTIFICATE_V2).expect("attribute").is_some(), "OpenSSL adds it");
        check_signing_certificate(si, signer).expect("names the signer");
        let e = check_signing_certificate(si, &cert(include_bytes!("testdata/other-ca.pem"))).expect_err("other");
        assert!(e.contains("names another certificate"), "{e}");
    }

    #[test]
    fn a_bundle_must_hold_a_certificate() {
        assert!(TrustBundle::from_pem(b"").is_err());
        assert!(TrustBundle::from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
        assert_eq!(TrustBundle::from_pem(include_bytes!("testdata/ca.pem")).expect("bundle").len(), 1);
    }
}
