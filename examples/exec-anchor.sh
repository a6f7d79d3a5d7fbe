#!/bin/sh
# Example exec anchor: "notarises" a root by hashing it with the attempt id, and prints the
# attestation as a JSON object on its last line. Replace with a call to a real service.
set -eu
digest=$(printf '%s %s' "$VMSH_BATCH_ROOT" "$VMSH_ATTEMPT_ID" | sha256sum | cut -d' ' -f1)
printf 'notarised %s for %s/%s\n' "$VMSH_BATCH_ID" "$VMSH_NAMESPACE" "$VMSH_CADENCE" >&2
printf '{"notary":"example","digest":"%s","batch":"%s"}\n' "$digest" "$VMSH_BATCH_ID"
