#!/usr/bin/env bash
# Regenerates the unit-test fixtures of the rfc3161 module with the openssl CLI:
#   ca.pem            root CA (RSA 2048)
#   inter.pem         intermediate CA (EC P-384), issued by the root
#   other-ca.pem      an unrelated CA (EC P-256)
#   token-ec.der      token for the root 0x5a×32, signed by a P-256 TSA issued by the root (SHA-256)
#   token-rsa.der     the same root, signed by an RSA TSA issued by the intermediate (SHA-384),
#                     carrying the intermediate
#   eku-*.pem         TSA-like certificates with a wrong extended key usage
# Certificates are valid for 100 years, and tokens are checked as of their genTime, so the
# fixtures do not expire.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/ext.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[tsa]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, nonRepudiation
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
[eku_noncritical]
extendedKeyUsage = timeStamping
[eku_two]
extendedKeyUsage = critical, timeStamping, codeSigning
[eku_none]
keyUsage = critical, digitalSignature
CNF
ssl() { openssl "$@" 2>/dev/null; }
ssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/ca.key" -out ca.pem -days 36500 -subj "/CN=Fixture Root CA" -config "$work/ext.cnf" -extensions ca
ssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/other.key" -out other-ca.pem -days 36500 -subj "/CN=Fixture Other CA" -config "$work/ext.cnf" -extensions ca
ssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout "$work/inter.key" -out "$work/inter.csr" -subj "/CN=Fixture Intermediate CA" -config "$work/ext.cnf"
ssl x509 -req -in "$work/inter.csr" -CA ca.pem -CAkey "$work/ca.key" -set_serial 2 -days 36500 -sha256 -extfile "$work/ext.cnf" -extensions ca -out inter.pem
issue() { # name key-args issuer-cert issuer-key extensions digest
    ssl req -new -newkey "$2" ${7:-} -nodes -keyout "$work/$1.key" -out "$work/$1.csr" -subj "/O=VaultMesh Fixture/CN=$1" -config "$work/ext.cnf"
    ssl x509 -req -in "$work/$1.csr" -CA "$3" -CAkey "$4" -set_serial "0x$(openssl rand -hex 8)" -days 36500 "-$6" -extfile "$work/ext.cnf" -extensions "$5" -out "$work/$1.pem"
}
issue tsa-ec ec ca.pem "$work/ca.key" tsa sha256 "-pkeyopt ec_paramgen_curve:P-256"
issue tsa-rsa rsa:2048 inter.pem "$work/inter.key" tsa sha384
for e in eku_noncritical eku_two eku_none; do
    issue "$e" ec ca.pem "$work/ca.key" "$e" sha256 "-pkeyopt ec_paramgen_curve:P-256"
    cp "$work/$e.pem" "${e//_/-}.pem"
done
printf 'Z%.0s' $(seq 32) > "$work/root.bin"   # 0x5a × 32
stamp() { # out signer-name digest certs
    cat > "$work/tsa.cnf" <<CNF
[tsa]
default_tsa = t
[t]
serial = $work/serial
crypto_device = builtin
signer_cert = $work/$2.pem
signer_key = $work/$2.key
certs = $4
signer_digest = $3
default_policy = 1.2.3.4.1
digests = sha256
accuracy = secs:1
clock_precision_digits = 3
ordering = yes
tsa_name = yes
ess_cert_id_alg = sha256
CNF
    echo 01 > "$work/serial"
    ssl ts -query -data "$work/root.bin" -sha256 -cert -out "$work/q.tsq"
    ssl ts -reply -config "$work/tsa.cnf" -queryfile "$work/q.tsq" -token_out -out "$1"
}
stamp token-ec.der tsa-ec sha256 "$work/tsa-ec.pem"
cat "$work/tsa-rsa.pem" inter.pem > "$work/chain.pem"
stamp token-rsa.der tsa-rsa sha384 "$work/chain.pem"
