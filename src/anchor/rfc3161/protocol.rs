//! The RFC 3161 messages on the wire: the TimeStampReq we send and the TimeStampResp we read.
//!
//! The request uses `x509-tsp`'s types. The response's PKIStatusInfo is read here instead:
//! `x509-tsp` 0.1 takes it from `cmpv2` 0.2, whose failure-info flags have wrong values
//! (two names share bit 2, and the bits past 15 do not fit its `u16`), so a reply carrying
//! e.g. `systemFailure` would fail to parse and others would be misnamed.

use der::asn1::{BitStringRef, Int, OctetString, Utf8StringRef};
use der::oid::ObjectIdentifier;
use der::{Any, Decode, Encode, Sequence};
use x509_cert::spki::AlgorithmIdentifier;
use x509_tsp::{MessageImprint, TimeStampReq, TspVersion};

use super::asn1;

/// id-sha256 (RFC 5754).
pub(super) const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");

/// PKIStatus values (RFC 3161 section 2.4.2); the index is the value.
const STATUS_NAMES: [&str; 6] =
    ["granted", "grantedWithMods", "rejection", "waiting", "revocationWarning", "revocationNotification"];

/// PKIFailureInfo bit names (RFC 3161 section 2.4.2 and RFC 4210 section 5.2.3); the index
/// is the bit number.
const FAILURE_NAMES: [&str; 27] = [
    "badAlg",
    "badMessageCheck",
    "badRequest",
    "badTime",
    "badCertId",
    "badDataFormat",
    "wrongAuthority",
    "incorrectData",
    "missingTimeStamp",
    "badPOP",
    "certRevoked",
    "certConfirmed",
    "wrongIntegrity",
    "badRecipientNonce",
    "timeNotAvailable",
    "unacceptedPolicy",
    "unacceptedExtension",
    "addInfoNotAvailable",
    "badSenderNonce",
    "badCertTemplate",
    "signerNotTrusted",
    "transactionIdInUse",
    "unsupportedVersion",
    "notAuthorized",
    "systemUnavail",
    "systemFailure",
    "duplicateCertReq",
];

/// The INTEGER encoding of a nonce: DER wants the shortest two's-complement form, positive.
pub(super) fn nonce_int(nonce: u64) -> Result<Int, String> {
    let bytes = nonce.to_be_bytes();
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len() - 1);
    let mut canonical = Vec::with_capacity(9);
    if bytes.get(start).is_some_and(|b| *b >= 0x80) {
        canonical.push(0);
    }
    canonical.extend_from_slice(bytes.get(start..).unwrap_or_default());
    Int::new(&canonical).map_err(|e| format!("cannot encode the nonce: {e}"))
}

/// A DER TimeStampReq: version 1, a SHA-256 imprint, `nonce`, certReq true, and `policy`
/// when one is asked for.
pub(super) fn build_request(
    imprint: &[u8; 32],
    nonce: &Int,
    policy: Option<ObjectIdentifier>,
) -> Result<Vec<u8>, String> {
    let req = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: MessageImprint {
            // NULL parameters, as OpenSSL and most clients send them; some TSAs refuse absent ones.
            hash_algorithm: AlgorithmIdentifier { oid: ID_SHA256, parameters: Some(Any::null()) },
            hashed_message: OctetString::new(imprint.to_vec())
                .map_err(|e| format!("cannot encode the imprint: {e}"))?,
        },
        req_policy: policy,
        nonce: Some(nonce.clone()),
        cert_req: true,
        extensions: None,
    };
    req.to_der().map_err(|e| format!("cannot encode the request: {e}"))
}

/// PKIStatusInfo with the failure info kept as raw bits (see the module comment).
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
struct StatusInfo<'a> {
    status: u32,
    #[asn1(optional = "true")]
    status_string: Option<Vec<Utf8StringRef<'a>>>,
    #[asn1(optional = "true")]
    fail_info: Option<BitStringRef<'a>>,
}

/// A TimeStampResp, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    /// PKIStatus value.
    pub status: u32,
    /// statusString texts.
    pub text: Vec<String>,
    /// Names of the failure-info bits set.
    pub failures: Vec<String>,
    /// The token (a ContentInfo), exactly as received.
    pub token: Option<Vec<u8>>,
}

impl Reply {
    /// Whether a token was granted (status granted or grantedWithMods).
    pub(super) fn granted(&self) -> bool {
        self.status <= 1
    }

    /// The status as a phrase: name, failure info and (shortened) status text.
    pub(super) fn describe(&self) -> String {
        let name = STATUS_NAMES.get(self.status as usize).map_or_else(|| format!("{}", self.status), |n| n.to_string());
        let mut out = format!("status {name}");
        if !self.failures.is_empty() {
            out.push_str(&format!(", failure info {}", self.failures.join(", ")));
        }
        let text = self.text.join("; ");
        if !text.is_empty() {
            // The text comes from the TSA: keep it short and printable.
            let mut clean: String =
                text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect::<String>();
            // The mark tells the redactor where a secret may have been cut.
            if text.chars().count() > 200 {
                clean.push('…');
            }
            out.push_str(&format!(" ({clean})"));
        }
        out
    }
}

/// Names of the bits set in a PKIFailureInfo BIT STRING (bit 0 is the first byte's high bit).
pub(super) fn failure_names(fail_info: &BitStringRef<'_>) -> Vec<String> {
    let bytes = fail_info.raw_bytes();
    (0..fail_info.bit_len())
        .filter(|i| bytes.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0))
        .map(|i| FAILURE_NAMES.get(i).map_or_else(|| format!("bit {i}"), |n| n.to_string()))
        .collect()
}

/// Parses a TimeStampResp. The token is cut out of the input rather than re-encoded, so its
/// bytes are exactly those the TSA signed and sent.
pub(super) fn parse_response(body: &[u8]) -> Result<Reply, String> {
    let outer = asn1::read_only(body, asn1::SEQUENCE, "TimeStampResp")?;
    let (status, rest) = asn1::read_tlv(outer.content).map_err(|e| format!("status: {e}"))?;
    let info = StatusInfo::from_der(status.whole).map_err(|e| format!("status: {e}"))?;
    let token = if rest.is_empty() {
        None
    } else {
        Some(asn1::read_only(rest, asn1::SEQUENCE, "timeStampToken")?.whole.to_vec())
    };
    Ok(Reply {
        status: info.status,
        text: info.status_string.unwrap_or_default().iter().map(|s| s.as_str().to_string()).collect(),
        failures: info.fail_info.as_ref().map(failure_names).unwrap_or_default(),
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_round_trips_through_the_parser() {
        let imprint = [0x5a; 32];
        let policy = ObjectIdentifier::new_unwrap("1.2.3.4.1");
        for nonce in [0u64, 1, 0x7f, 0x80, 0xff, 0x1234, 0x8000_0000_0000_0000, u64::MAX] {
            let n = nonce_int(nonce).expect("nonce");
            let der = build_request(&imprint, &n, Some(policy)).expect("request");
            let back = TimeStampReq::from_der(&der).expect("parses");
            assert_eq!(back.version, TspVersion::V1);
            assert_eq!(back.message_imprint.hash_algorithm.oid, ID_SHA256);
            assert_eq!(back.message_imprint.hashed_message.as_bytes(), &imprint);
            assert_eq!(back.req_policy, Some(policy));
            assert!(back.cert_req);
            let got = back.nonce.expect("nonce present");
            assert_eq!(got, n);
            // The value is the nonce, unsigned, big-endian.
            let value = got.as_bytes().iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
            assert_eq!(value, u128::from(nonce), "{nonce:#x}");
        }
        let der = build_request(&imprint, &nonce_int(7).expect("nonce"), None).expect("request");
        assert_eq!(TimeStampReq::from_der(&der).expect("parses").req_policy, None);
    }

    /// A TimeStampResp with just a PKIStatusInfo of `status` and failure-info `bits`.
    fn rejection(status: u8, bits: &[u8], text: &str) -> Vec<u8> {
        let mut info = vec![0x02, 0x01, status];
        if !text.is_empty() {
            info.extend([0x30, text.len() as u8 + 2, 0x0c, text.len() as u8]);
            info.extend(text.as_bytes());
        }
        if !bits.is_empty() {
            info.extend([0x03, bits.len() as u8]);
            info.extend(bits);
        }
        let mut status_info = vec![0x30, info.len() as u8];
        status_info.extend(info);
        let mut resp = vec![0x30, status_info.len() as u8];
        resp.extend(status_info);
        resp
    }

    #[test]
    fn failure_info_bits_are_decoded_by_their_rfc_numbers() {
        // badAlg is bit 0: the first byte's high bit (7 unused bits).
        let r = parse_response(&rejection(2, &[0x07, 0x80], "")).expect("parses");
        assert_eq!((r.status, r.failures.clone()), (2, vec!["badAlg".to_string()]));
        assert!(!r.granted());
        // badRequest is bit 2 (cmpv2 0.2 gives badTime the same value).
        assert_eq!(parse_response(&rejection(2, &[0x05, 0x20], "")).expect("parses").failures, ["badRequest"]);
        // unacceptedPolicy is bit 15, as OpenSSL sends it.
        assert_eq!(
            parse_response(&rejection(2, &[0x00, 0x00, 0x01], "")).expect("parses").failures,
            ["unacceptedPolicy"]
        );
        // systemFailure is bit 25: past 16 bits, which cmpv2 0.2 cannot hold.
        let r = parse_response(&rejection(2, &[0x06, 0x00, 0x00, 0x00, 0x40], "try later")).expect("parses");
        assert_eq!(r.failures, ["systemFailure"]);
        assert_eq!(r.describe(), "status rejection, failure info systemFailure (try later)");
        // Several bits, and one nobody named.
        let r = parse_response(&rejection(2, &[0x00, 0x84, 0x01, 0x00, 0x00, 0x01], "")).expect("parses");
        assert_eq!(r.failures, ["badAlg", "badDataFormat", "unacceptedPolicy", "bit 39"]);
        // Unused bits are not read even when set.
        assert!(parse_response(&rejection(2, &[0x07, 0x7f], "")).expect("parses").failures.is_empty());
        let r = parse_response(&rejection(0, &[], "")).expect("parses");
        assert!(r.granted() && r.token.is_none());
    }

    #[test]
    fn bad_responses_are_errors_not_panics() {
        let good = rejection(2, &[0x00, 0x00, 0x01], "policy");
        for cut in 0..good.len() {
            assert!(parse_response(&good[..cut]).is_err(), "cut at {cut}");
        }
        for garbage in [
            &b"<html>not found</html>"[..],
            b"\x00\x00",
            b"\x31\x03\x02\x01\x00",
            b"\x30\x03\x04\x01\x00",
            b"\x30\x05\x30\x03\x02\x01\x00\x00",
            b"\x30\x07\x30\x03\x02\x01\x00\x04\x00",
            b"\x30\x03\x30\x01\x02",
        ] {
            assert!(parse_response(garbage).is_err(), "{garbage:?}");
        }
        // Every single-byte change either parses or is an error.
        for i in 0..good.len() {
            for v in [0x00, 0x7f, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                let _ = parse_response(&b);
            }
        }
    }

    /// A small deterministic generator; `VMSH_SEED` replays a run.
    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n.max(1) as u64) as usize
        }
    }

    /// One to four DER-aware changes: bit flips, odd bytes (tags, long and indefinite length
    /// forms), insertions, deletions, truncation, duplicated ranges, splices with another
    /// input, and extra SEQUENCE wrappers.
    fn mutate(rng: &mut XorShift, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
        const ODD: [u8; 16] =
            [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0c, 0x30, 0x31, 0x7f, 0x80, 0x81, 0x84, 0xa0, 0xff];
        let mut b = input.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(b.len() + 1);
            let last = b.len().saturating_sub(1);
            // Changes in place keep every length right, so they reach deep into the structure.
            let op = if rng.below(2) == 0 { rng.below(2) } else { rng.below(8) };
            match op {
                0 if !b.is_empty() => b[at.min(last)] ^= 1 << rng.below(8),
                1 if !b.is_empty() => b[at.min(last)] = ODD[rng.below(ODD.len())],
                2 => {
                    let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| ODD[rng.below(ODD.len())]).collect();
                    b.splice(at..at, bytes);
                }
                3 => {
                    let end = (at + 1 + rng.below(16)).min(b.len());
                    b.drain(at.min(end)..end);
                }
                4 => b.truncate(at),
                5 => {
                    let other = &corpus[rng.below(corpus.len())];
                    let from = rng.below(other.len() + 1);
                    b.truncate(at);
                    b.extend_from_slice(&other[from..]);
                }
                6 => {
                    let end = (at + 1 + rng.below(64)).min(b.len());
                    let copy = b[at.min(end)..end].to_vec();
                    let to = rng.below(b.len() + 1);
                    b.splice(to..to, copy);
                }
                _ => {
                    for _ in 0..1 + rng.below(3) {
                        let len = b.len();
                        let mut head = vec![0x30];
                        match len {
                            0..0x80 => head.push(len as u8),
                            0x80..0x100 => head.extend([0x81, len as u8]),
                            _ => head.extend([0x82, (len >> 8) as u8, len as u8]),
                        }
                        b.splice(0..0, head);
                    }
                }
            }
        }
        b
    }

    const TOKEN_EC: &[u8] = include_bytes!("testdata/token-ec.der");
    const TOKEN_RSA: &[u8] = include_bytes!("testdata/token-rsa.der");

    /// A TimeStampResp granting `token`.
    fn granted(token: &[u8]) -> Vec<u8> {
        let mut content = vec![0x30, 0x03, 0x02, 0x01, 0x00];
        content.extend_from_slice(token);
        let len = content.len();
        let mut out = match len {
            0..0x80 => vec![0x30, len as u8],
            0x80..0x100 => vec![0x30, 0x81, len as u8],
            0x100..0x10000 => vec![0x30, 0x82, (len >> 8) as u8, len as u8],
            _ => vec![0x30, 0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8],
        };
        out.extend(content);
        out
    }

    #[test]
    fn mutated_replies_and_their_tokens_parse_or_fail_cleanly() {
        use std::path::Path;
        let corpus_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus/tsa");
        let failures = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures/tsa-response");
        let mut corpus: Vec<Vec<u8>> = Vec::new();
        for dir in [&corpus_dir, &failures] {
            let mut files: Vec<_> =
                std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
            files.sort();
            corpus.extend(files.iter().filter(|p| !p.ends_with("README.md")).map(|p| std::fs::read(p).expect("read")));
        }
        assert!(corpus.len() >= 12, "the corpus holds {} files", corpus.len());
        let seed = std::env::var("VMSH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64)
        });
        println!("seed {seed} (set VMSH_SEED to replay)");
        let mut rng = XorShift(seed | 1);
        let full = std::env::var("VMSH_RELIABILITY").is_ok_and(|v| v == "full");
        let budget = if full { 30_000 } else { 3_000 };
        let bundle = super::super::TrustBundle::from_pem(include_bytes!("testdata/ca.pem")).expect("bundle");
        let imprint = super::super::token::imprint_of(&[0x5a; 32]);
        let expected = super::super::token::Expected { imprint: &imprint, nonce: None, policy: None };
        let started = std::time::Instant::now();
        let (mut parsed, mut tokens, mut accepted, mut verified) = (0, 0, 0, 0);
        for case in 0..corpus.len() + budget {
            let input = match corpus.get(case) {
                Some(seed_input) => seed_input.clone(),
                // Half the cases change a token and send it in a granted reply, so the token's
                // own parsing and checks see most of the changes.
                None if rng.below(2) == 0 => {
                    let original = if rng.below(2) == 0 { TOKEN_EC } else { TOKEN_RSA };
                    let token = mutate(&mut rng, original, &corpus);
                    granted(&token)
                }
                None => {
                    let pick = rng.below(corpus.len());
                    mutate(&mut rng, &corpus[pick], &corpus)
                }
            };
            // Signature checks are slow in debug builds: one token in 8 goes through them.
            let with_bundle = rng.below(8) == 0;
            let outcome = std::panic::catch_unwind(|| match parse_response(&input) {
                Ok(reply) => {
                    assert!(!reply.describe().is_empty());
                    let token = reply.token.map(|t| {
                        let checked = super::super::token::check(&t, &expected, with_bundle.then_some(&bundle));
                        if let Err(e) = &checked {
                            assert!(!e.is_empty(), "an empty error");
                        }
                        checked.is_ok()
                    });
                    Ok(token)
                }
                Err(e) => {
                    assert!(!e.is_empty(), "an empty error");
                    Err(())
                }
            });
            match outcome {
                Ok(Ok(token)) => {
                    parsed += 1;
                    tokens += usize::from(token.is_some());
                    accepted += usize::from(token == Some(true));
                    verified += usize::from(token == Some(true) && with_bundle);
                }
                Ok(Err(())) => {}
                Err(_) => {
                    std::fs::create_dir_all(&failures).expect("mkdir");
                    let file = failures.join(format!("{seed}-{case}.der"));
                    std::fs::write(&file, &input).expect("save the failing input");
                    panic!("case {case} (seed {seed}) panicked; input saved to {}", file.display());
                }
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "RELIABILITY {}",
            serde_json::json!({"scenario": "fuzz: TSA reply parser (parse_response, then the token's checks)",
                "runs": budget, "result": "pass",
                "figures": {"seed": seed, "corpusFiles": corpus.len(), "parsed": parsed, "withToken": tokens, "tokenAccepted": accepted,
                    "verifiedAgainstBundle": verified, "seconds": (seconds * 100.0).round() / 100.0}})
        );
        assert!(parsed > budget / 4 && tokens > budget / 4, "few mutants parse ({parsed}/{budget}): a weak fuzzer");
    }
}
