//! A time-stamp token (RFC 3161 section 2.4.2): a CMS ContentInfo holding SignedData whose
//! content is a TSTInfo. Reading it, checking it against what was asked, and — with a trust
//! bundle — checking who signed it.

use cms::signed_data::{EncapsulatedContentInfo, SignerInfo};
use der::asn1::{Int, OctetString};
use der::oid::ObjectIdentifier;
use der::{Decode, Sequence, Tag, Tagged};
use sha2::Digest;
use x509_cert::ext::Extensions;
use x509_cert::ext::pkix::name::GeneralName;
use x509_tsp::{Accuracy, MessageImprint, TspVersion};

use super::asn1::{self, GenTime};
use super::protocol::ID_SHA256;
use super::trust::{self, SignedToken, Signer, SignerCertificate, TrustBundle};

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");

/// TSTInfo, as `x509-tsp` defines it except for genTime, which may carry fractional seconds.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct TstInfo {
    version: TspVersion,
    policy: ObjectIdentifier,
    message_imprint: MessageImprint,
    serial_number: Int,
    gen_time: GenTime,
    #[asn1(optional = "true")]
    accuracy: Option<Accuracy>,
    #[asn1(default = "Default::default")]
    ordering: bool,
    #[asn1(optional = "true")]
    nonce: Option<Int>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    tsa: Option<GeneralName>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    extensions: Option<Extensions>,
}

/// What a token attests, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// genTime, Unix milliseconds.
    pub gen_time_ms: i64,
    /// The token's serial number, hex.
    pub serial_hex: String,
    /// The TSA policy the token was issued under, dotted OID.
    pub policy: String,
    /// The TSA's name, when the token carries one.
    pub tsa_name: Option<String>,
    /// Whether the signature and certificate chain were checked against a trust bundle.
    pub verified: bool,
}

/// What the token must match.
#[derive(Debug, Clone, Copy)]
pub(super) struct Expected<'a> {
    /// SHA-256 of the data time-stamped.
    pub imprint: &'a [u8; 32],
    /// The request's nonce, when it is known.
    pub nonce: Option<&'a Int>,
    /// The policy asked for, if any.
    pub policy: Option<&'a ObjectIdentifier>,
}

/// Splits a token into the TSTInfo octets, the certificates it carries and its signers, each
/// with its signed attributes as received (re-tagged from `[0] IMPLICIT` to SET, which is
/// what is signed: RFC 5652 section 5.4).
///
/// The SignedData is walked here rather than decoded with `cms`: `der` refuses a SET OF with
/// two equal elements, and OpenSSL's TSA puts the signer's certificate in twice when its
/// `certs` file holds it too — a token that is perfectly usable.
pub(super) fn split(token: &[u8]) -> Result<SignedToken, String> {
    // ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT content }
    let outer = asn1::read_only(token, asn1::SEQUENCE, "ContentInfo")?;
    let (content_type, wrapped) = match asn1::children(outer.content)?.as_slice() {
        [oid, wrapped] if wrapped.tag == asn1::CONTEXT_0 => (*oid, *wrapped),
        _ => return Err("a ContentInfo is a content type and a [0] content".into()),
    };
    let content_type = ObjectIdentifier::from_der(content_type.whole).map_err(|e| format!("content type: {e}"))?;
    if content_type != ID_SIGNED_DATA {
        return Err(format!("content type {content_type} is not signedData"));
    }
    // SignedData ::= SEQUENCE { version, digestAlgorithms SET, encapContentInfo,
    //   [0] IMPLICIT certificates OPTIONAL, [1] IMPLICIT crls OPTIONAL, signerInfos SET }
    let sd = asn1::read_only(wrapped.content, asn1::SEQUENCE, "SignedData")?;
    let fields = asn1::children(sd.content)?;
    let (encap, middle, signer_infos) = match fields.as_slice() {
        [_version, algs, encap, middle @ .., infos]
            if algs.tag == asn1::SET && encap.tag == asn1::SEQUENCE && infos.tag == asn1::SET =>
        {
            (*encap, middle, *infos)
        }
        _ => return Err("SignedData lacks a required field".into()),
    };
    let encap = EncapsulatedContentInfo::from_der(encap.whole).map_err(|e| format!("encapContentInfo: {e}"))?;
    if encap.econtent_type != trust::ID_CT_TST_INFO {
        return Err(format!("the signed content type {} is not id-ct-TSTInfo", encap.econtent_type));
    }
    let econtent = encap.econtent.as_ref().ok_or("the token carries no TSTInfo")?;
    if econtent.tag() != Tag::OctetString {
        return Err("the TSTInfo is not in a primitive OCTET STRING".into());
    }
    let mut certificates = Vec::new();
    for field in middle {
        match field.tag {
            asn1::CONTEXT_0 => {
                // Other certificate formats (attribute certificates …) cannot help a chain.
                let certs = asn1::children(field.content)?;
                certificates.extend(certs.iter().filter(|c| c.tag == asn1::SEQUENCE).map(|c| c.whole.to_vec()));
            }
            0xa1 => {}
            other => return Err(format!("unexpected field with tag 0x{other:02x} in SignedData")),
        }
    }
    let mut signers = Vec::new();
    for si in asn1::children(signer_infos.content)? {
        let info = SignerInfo::from_der(si.whole).map_err(|e| format!("signerInfo: {e}"))?;
        let signed_attrs = asn1::children(si.content)?
            .iter()
            .find(|t| t.tag == asn1::CONTEXT_0)
            .map(|attrs| [&[asn1::SET][..], attrs.whole.get(1..).unwrap_or_default()].concat());
        signers.push(Signer { info, signed_attrs });
    }
    Ok(SignedToken { tst_info: econtent.value().to_vec(), certificates, signers })
}

/// An INTEGER's magnitude in hex (no sign byte), as serial numbers are usually shown.
fn int_hex(i: &Int) -> String {
    let bytes = i.as_bytes();
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len().saturating_sub(1));
    crate::model::digest::to_hex(bytes.get(start..).unwrap_or_default())
}

fn tsa_name(name: &GeneralName) -> String {
    match name {
        GeneralName::DirectoryName(n) => n.to_string(),
        GeneralName::DnsName(s) | GeneralName::Rfc822Name(s) | GeneralName::UniformResourceIdentifier(s) => {
            s.to_string()
        }
        GeneralName::IpAddress(ip) => crate::model::digest::to_hex(ip.as_bytes()),
        GeneralName::RegisteredId(oid) => oid.to_string(),
        GeneralName::OtherName(_) | GeneralName::EdiPartyName(_) => "(a name of another form)".into(),
    }
}

/// Reads a token and checks it against `expected`; with a `bundle`, also checks its
/// signature, the signer's certificate chain and the signer's time-stamping usage.
pub(super) fn check(token: &[u8], expected: &Expected<'_>, bundle: Option<&TrustBundle>) -> Result<TokenInfo, String> {
    let parts = split(token).map_err(|e| format!("malformed time-stamp token: {e}"))?;
    let tst = TstInfo::from_der(&parts.tst_info).map_err(|e| format!("malformed TSTInfo: {e}"))?;
    let alg = &tst.message_imprint.hash_algorithm;
    let null_or_absent = alg.parameters.as_ref().is_none_or(|p| p.tag() == Tag::Null && p.value().is_empty());
    if alg.oid != ID_SHA256 || !null_or_absent {
        return Err(format!("the token's imprint uses {} instead of SHA-256", alg.oid));
    }
    if tst.message_imprint.hashed_message != OctetString::new(expected.imprint.to_vec()).map_err(|e| e.to_string())? {
        return Err("the token time-stamps another imprint than the root's".into());
    }
    if let Some(nonce) = expected.nonce
        && tst.nonce.as_ref() != Some(nonce)
    {
        return Err(match &tst.nonce {
            Some(_) => "the token's nonce is not the request's (a replayed or mixed-up reply)".into(),
            None => "the token has no nonce, though the request had one".into(),
        });
    }
    if let Some(policy) = expected.policy
        && tst.policy != *policy
    {
        return Err(format!("the token is under policy {} instead of the requested {policy}", tst.policy));
    }
    let gen_time_ms = tst.gen_time.unix_ms()?;
    if let Some(bundle) = bundle {
        trust::verify_signed_token(&parts, gen_time_ms, bundle)?;
    }
    Ok(TokenInfo {
        gen_time_ms,
        serial_hex: int_hex(&tst.serial_number),
        policy: tst.policy.to_string(),
        tsa_name: tst.tsa.as_ref().map(tsa_name),
        verified: bundle.is_some(),
    })
}

/// The certificate that signed `token` (see [`trust::signer_certificate`]), when it can be
/// found; for monitoring its expiry, not for trusting it.
pub(super) fn signer_of(token: &[u8], bundle: Option<&TrustBundle>) -> Option<SignerCertificate> {
    trust::signer_certificate(&split(token).ok()?, bundle)
}

/// The imprint of a root: SHA-256 of its 32 bytes.
pub(super) fn imprint_of(root: &[u8; 32]) -> [u8; 32] {
    sha2::Sha256::digest(root).into()
}

/// Verifies a stored token (the DER ContentInfo) against the root it should time-stamp:
/// the imprint must be SHA-256 of the root's 32 bytes; with a PEM trust bundle, the
/// signature, certificate chain and time-stamping usage are checked too. Pure and
/// synchronous, for `verify RECEIPT`.
pub fn verify_token(token_der: &[u8], root: &[u8; 32], trust_bundle_pem: Option<&[u8]>) -> Result<TokenInfo, String> {
    let bundle = trust_bundle_pem.map(TrustBundle::from_pem).transpose().map_err(|e| format!("trust bundle: {e}"))?;
    let imprint = imprint_of(root);
    check(token_der, &Expected { imprint: &imprint, nonce: None, policy: None }, bundle.as_ref())
}

#[cfg(test)]
mod tests {
    //! Fixtures come from `testdata/make.sh` (OpenSSL): both tokens time-stamp the root 0x5a×32.
    use super::*;

    const ROOT: [u8; 32] = [0x5a; 32];
    const TOKEN_EC: &[u8] = include_bytes!("testdata/token-ec.der");
    const TOKEN_RSA: &[u8] = include_bytes!("testdata/token-rsa.der");
    const CA: &[u8] = include_bytes!("testdata/ca.pem");
    const INTERMEDIATE: &[u8] = include_bytes!("testdata/inter.pem");
    const OTHER_CA: &[u8] = include_bytes!("testdata/other-ca.pem");

    #[test]
    fn a_token_verifies_against_its_root_without_a_bundle() {
        for token in [TOKEN_EC, TOKEN_RSA] {
            let info = verify_token(token, &ROOT, None).expect("valid token");
            assert!(!info.verified);
            assert_eq!(info.policy, "1.2.3.4.1");
            assert_eq!(info.serial_hex, "02", "OpenSSL counts from its serial file's 01");
            assert!(info.gen_time_ms > 1_700_000_000_000, "{info:?}");
            assert!(info.tsa_name.as_deref().is_some_and(|n| n.contains("VaultMesh Fixture")), "{info:?}");
        }
    }

    #[test]
    fn an_ecdsa_token_verifies_against_the_bundle_of_its_ca() {
        let info = verify_token(TOKEN_EC, &ROOT, Some(CA)).expect("verified");
        assert!(info.verified);
    }

    #[test]
    fn an_rsa_token_verifies_through_the_intermediate_it_carries() {
        let info = verify_token(TOKEN_RSA, &ROOT, Some(CA)).expect("verified");
        assert!(info.verified);
        // Trusting the intermediate itself is enough as well.
        verify_token(TOKEN_RSA, &ROOT, Some(INTERMEDIATE)).expect("verified against the intermediate");
    }

    #[test]
    fn the_signers_certificate_is_found_for_its_expiry_whether_or_not_it_is_trusted() {
        for token in [TOKEN_EC, TOKEN_RSA] {
            let signer = signer_of(token, None).expect("the token carries its signer's certificate");
            assert!(signer.subject.contains("VaultMesh Fixture"), "{signer:?}");
            assert!(signer.not_after_ms > 1_700_000_000_000, "{signer:?}");
            assert_eq!(signer.id.len(), 64);
            assert_eq!(signer_of(token, Some(&TrustBundle::from_pem(OTHER_CA).expect("bundle"))), Some(signer));
        }
        assert_ne!(signer_of(TOKEN_EC, None).map(|s| s.id), signer_of(TOKEN_RSA, None).map(|s| s.id));
        assert_eq!(signer_of(b"garbage", None), None);
    }

    #[test]
    fn a_token_for_another_root_is_refused() {
        let e = verify_token(TOKEN_EC, &[0x5b; 32], None).expect_err("other root");
        assert!(e.contains("another imprint"), "{e}");
    }

    #[test]
    fn a_bundle_without_the_issuing_ca_is_refused() {
        for token in [TOKEN_EC, TOKEN_RSA] {
            let e = verify_token(token, &ROOT, Some(OTHER_CA)).expect_err("untrusted");
            assert!(e.contains("does not chain to the trust bundle"), "{e}");
        }
        let e = verify_token(TOKEN_EC, &ROOT, Some(b"not a pem")).expect_err("bad bundle");
        assert!(e.starts_with("trust bundle:"), "{e}");
    }

    #[test]
    fn a_tampered_token_fails_verification() {
        // Change genTime's year (GeneralizedTime "20…"): still well formed, but no longer what
        // was signed.
        let mut t = TOKEN_EC.to_vec();
        let at = t.windows(4).position(|w| w[0] == 0x18 && w[2..] == *b"20").expect("genTime") + 2;
        t[at + 3] = if t[at + 3] == b'1' { b'2' } else { b'1' };
        verify_token(&t, &ROOT, None).expect("still well formed");
        let e = verify_token(&t, &ROOT, Some(CA)).expect_err("digest mismatch");
        assert!(e.contains("message digest does not match"), "{e}");
        // Change the last byte (inside the signature).
        let mut t = TOKEN_RSA.to_vec();
        let last = t.len() - 1;
        t[last] ^= 0x01;
        let e = verify_token(&t, &ROOT, Some(CA)).expect_err("bad signature");
        assert!(e.contains("signature"), "{e}");
    }

    #[test]
    fn truncated_garbage_and_mistagged_tokens_are_errors_not_panics() {
        for cut in 0..TOKEN_EC.len() {
            assert!(verify_token(&TOKEN_EC[..cut], &ROOT, Some(CA)).is_err(), "cut at {cut}");
        }
        for garbage in [&b""[..], b"garbage", b"\x30\x00", b"\x30\x80\x00\x00", b"\x04\x03abc", &[0xff; 64]] {
            assert!(verify_token(garbage, &ROOT, None).is_err(), "{garbage:?}");
        }
        // The outer tag changed to SET, then to an OCTET STRING.
        for tag in [0x31, 0x04] {
            let mut t = TOKEN_EC.to_vec();
            t[0] = tag;
            assert!(verify_token(&t, &ROOT, None).is_err());
        }
        // Any byte changed: an error or a result, never a panic. Signature checks are slow in
        // debug builds, so only every 23rd position goes through them.
        for i in 0..TOKEN_RSA.len() {
            let mut t = TOKEN_RSA.to_vec();
            t[i] ^= 0x55;
            let _ = verify_token(&t, &ROOT, (i % 23 == 0).then_some(CA));
        }
    }

    #[test]
    fn the_expected_nonce_and_policy_must_match() {
        let imprint = imprint_of(&ROOT);
        let parts = split(TOKEN_EC).expect("parts");
        let tst = TstInfo::from_der(&parts.tst_info).expect("tst");
        let nonce = tst.nonce.clone().expect("nonce");
        let policy = ObjectIdentifier::new_unwrap("1.2.3.4.1");
        let ok = Expected { imprint: &imprint, nonce: Some(&nonce), policy: Some(&policy) };
        check(TOKEN_EC, &ok, None).expect("matches");
        let other = Int::new(&[0x01, 0x02]).expect("int");
        let e = check(TOKEN_EC, &Expected { nonce: Some(&other), ..ok }, None).expect_err("nonce");
        assert!(e.contains("nonce"), "{e}");
        let other_policy = ObjectIdentifier::new_unwrap("1.2.3.4.5");
        let e = check(TOKEN_EC, &Expected { policy: Some(&other_policy), ..ok }, None).expect_err("policy");
        assert!(e.contains("policy 1.2.3.4.1 instead of the requested 1.2.3.4.5"), "{e}");
    }

    /// A DER element with the shortest length form.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let len = content.len();
        let mut out = vec![tag];
        match len {
            0..0x80 => out.push(len as u8),
            0x80..0x100 => out.extend([0x81, len as u8]),
            0x100..0x10000 => out.extend([0x82, (len >> 8) as u8, len as u8]),
            _ => out.extend([0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    /// The token with its SignedData fields (version, digest algorithms, content,
    /// certificates, signer infos) changed by `change`, and every length fixed up.
    fn rebuild(token: &[u8], change: impl FnOnce(&mut Vec<Vec<u8>>)) -> Vec<u8> {
        let outer = asn1::read_only(token, asn1::SEQUENCE, "ContentInfo").expect("ContentInfo");
        let [oid, wrapped] = asn1::children(outer.content).expect("children")[..] else { panic!("shape") };
        let sd = asn1::read_only(wrapped.content, asn1::SEQUENCE, "SignedData").expect("SignedData");
        let mut fields: Vec<Vec<u8>> =
            asn1::children(sd.content).expect("fields").iter().map(|f| f.whole.to_vec()).collect();
        change(&mut fields);
        let signed_data = tlv(asn1::SEQUENCE, &fields.concat());
        tlv(asn1::SEQUENCE, &[oid.whole.to_vec(), tlv(asn1::CONTEXT_0, &signed_data)].concat())
    }

    #[test]
    fn hostile_lengths_nesting_and_trailing_bytes_are_errors() {
        assert_eq!(rebuild(TOKEN_EC, |_| {}), TOKEN_EC, "the test's DER writer matches the fixture");
        let body = &TOKEN_EC[4..];
        for (what, token) in [
            ("a length of 4 GiB", [&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff][..], body].concat()),
            ("a five-byte length", [&[0x30, 0x85, 0, 0, 0, 0x07, 0x0a][..], body].concat()),
            ("an indefinite length", [&[0x30, 0x80][..], body, &[0, 0]].concat()),
            ("trailing bytes", [TOKEN_EC, &[0x00]].concat()),
            ("two tokens", [TOKEN_EC, TOKEN_EC].concat()),
        ] {
            let e = verify_token(&token, &ROOT, Some(CA)).expect_err(what);
            assert!(e.starts_with("malformed time-stamp token"), "{what}: {e}");
        }
        // Ten thousand SEQUENCEs around the token: refused at once, not walked.
        let mut nested = TOKEN_EC.to_vec();
        for _ in 0..10_000 {
            nested = tlv(asn1::SEQUENCE, &nested);
        }
        let started = std::time::Instant::now();
        assert!(verify_token(&nested, &ROOT, Some(CA)).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[test]
    fn a_token_needs_exactly_one_signer_and_no_unknown_fields() {
        let signers = |n: usize| {
            rebuild(TOKEN_EC, |f| {
                let infos = f.pop().expect("signerInfos");
                let set = asn1::read_only(&infos, asn1::SET, "signerInfos").expect("SET");
                let one = asn1::children(set.content).expect("signer")[0].whole.to_vec();
                f.push(tlv(asn1::SET, &one.repeat(n)));
            })
        };
        assert_eq!(signers(1), TOKEN_EC);
        for n in [0, 2] {
            // Without a bundle the signature is not looked at; with one, the count matters.
            verify_token(&signers(n), &ROOT, None).expect("well formed");
            let e = verify_token(&signers(n), &ROOT, Some(CA)).expect_err("not one signer");
            assert!(e.contains(&format!("exactly one signer, this one has {n}")), "{e}");
        }
        let unknown = rebuild(TOKEN_EC, |f| f.insert(f.len() - 1, tlv(0xa2, &[])));
        let e = verify_token(&unknown, &ROOT, None).expect_err("unknown field");
        assert!(e.contains("unexpected field with tag 0xa2"), "{e}");
    }

    #[test]
    fn hundreds_of_carried_certificates_verify_in_bounded_time() {
        // OpenSSL may carry the signer's certificate twice; a hostile TSA could carry it
        // hundreds of times. Every copy is read, but nothing grows faster than their number.
        let token = rebuild(TOKEN_RSA, |f| {
            let at = f.iter().position(|x| x[0] == asn1::CONTEXT_0).expect("certificates");
            let certs = asn1::read_only(&f[at], asn1::CONTEXT_0, "certificates").expect("certs").content.to_vec();
            f[at] = tlv(asn1::CONTEXT_0, &certs.repeat(300));
        });
        let started = std::time::Instant::now();
        let info = verify_token(&token, &ROOT, Some(CA)).expect("still verifies");
        assert!(info.verified);
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    }
}
