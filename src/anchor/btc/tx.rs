//! Reads a serialized Bitcoin transaction (legacy or segwit) for what the driver must not
//! take on a node's word: its txid, the coins it spends and its output scripts. A node
//! answers `decoderawtransaction` and `gettransaction` with its own reading of the bytes; the
//! driver checks that reading against the bytes it signed and sent. The virtual size is read
//! here too, so a fee rate is the fee over the bytes the network will count.

use sha2::{Digest, Sha256};

use crate::model::digest::to_hex;

/// What the driver needs of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Parsed {
    /// The txid as bitcoind writes it: the double SHA-256 of the serialization without
    /// witnesses, byte-reversed, in lower-case hex.
    pub txid: String,
    /// Every output's script, in order.
    pub scripts: Vec<Vec<u8>>,
    /// The coins it spends, as `(txid, output index)`, the txid as bitcoind writes it.
    pub inputs: Vec<(String, u32)>,
    /// Virtual size (BIP 141): the weight over 4, rounded up.
    pub vsize: u64,
}

impl Parsed {
    /// Whether an output is `OP_RETURN` pushing exactly `data`.
    pub(super) fn carries(&self, data: &[u8]) -> bool {
        self.scripts.iter().any(|s| super::op_return_data(&to_hex(s)).is_some_and(|d| d == data))
    }

    /// Whether it spends every coin `other` spends: then at most one of the two can ever be
    /// mined.
    pub(super) fn spends_all_of(&self, other: &Parsed) -> bool {
        other.inputs.iter().all(|i| self.inputs.contains(i))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn varint(&mut self) -> Option<usize> {
        let n = match self.take(1)?[0] {
            0xfd => u64::from(u16::from_le_bytes(self.take(2)?.try_into().ok()?)),
            0xfe => u64::from(u32::from_le_bytes(self.take(4)?.try_into().ok()?)),
            0xff => u64::from_le_bytes(self.take(8)?.try_into().ok()?),
            n => u64::from(n),
        };
        // No count can exceed the bytes left; this also bounds every allocation.
        usize::try_from(n).ok().filter(|n| *n <= self.bytes.len() - self.at)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.varint()?;
        self.take(n)
    }
}

/// Reads a serialized transaction; `None` if the bytes are not exactly one transaction.
pub(super) fn parse(bytes: &[u8]) -> Option<Parsed> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.take(4)?;
    let segwit = bytes.get(4..6) == Some(&[0x00, 0x01]);
    if segwit {
        r.take(2)?;
    }
    let body_start = r.at;
    let count = r.varint()?;
    let mut inputs = Vec::with_capacity(count);
    for _ in 0..count {
        let mut txid: [u8; 32] = r.take(32)?.try_into().ok()?;
        txid.reverse();
        let vout = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
        inputs.push((to_hex(&txid), vout));
        r.bytes()?;
        r.take(4)?;
    }
    let outputs = r.varint()?;
    let mut scripts = Vec::with_capacity(outputs);
    for _ in 0..outputs {
        r.take(8)?;
        scripts.push(r.bytes()?.to_vec());
    }
    let body_end = r.at;
    if segwit {
        for _ in 0..count {
            for _ in 0..r.varint()? {
                r.bytes()?;
            }
        }
    }
    let locktime = r.take(4)?;
    if r.at != bytes.len() {
        return None;
    }
    let mut hasher = Sha256::new();
    hasher.update(version);
    hasher.update(&bytes[body_start..body_end]);
    hasher.update(locktime);
    let mut id: [u8; 32] = Sha256::digest(hasher.finalize()).into();
    id.reverse();
    // Witness bytes weigh 1, the rest 4: the stripped size counts 3 more times.
    let stripped = 4 + (body_end - body_start) + 4;
    let weight = 3 * stripped as u64 + bytes.len() as u64;
    Some(Parsed { txid: to_hex(&id), scripts, inputs, vsize: weight.div_ceil(4) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::digest::parse_hex;

    /// A mainnet transaction with one input and two outputs (legacy serialization), and its txid.
    const LEGACY: &str = "0100000001c997a5e56e104102fa209c6a852dd90660a20b2d9c352423edce25857fcd3704000000004847304402204e45e16932b8af514961a1d3a1a25fdf3f4f7732e9d624c6c61548ab5fb8cd410220181522ec8eca07de4860a4acdd12909d831cc56cbbac4622082221a8768d1d0901ffffffff0200ca9a3b00000000434104ae1a62fe09c5f51b13905f07f06b99a2f7159b2225f374cd378d71302fa28414e7aab37397f554a7df5f142c21c1b7303b8a0626f1baded5c72a704f7e6cd84cac00286bee0000000043410411db93e1dcdb8a016b49840f8c53bc1eb68a382e97b1482ecad7b148a6909a5cb2e0eaddfb84ccf9744464f82e160bfa9b8b64f9d4c03f999b8643f656b412a3ac00000000";
    const LEGACY_TXID: &str = "f4184fc596403b9d638783cf57adfe4c75c605f6356fbc91338530e9831e9e16";

    /// A segwit transaction (BIP 143's native P2WPKH example, signed) and its txid.
    const SEGWIT: &str = "01000000000102fff7f7881a8099afa6940d42d1e7f6362bec38171ea3edf433541db4e4ad969f00000000494830450221008b9d1dc26ba6a9cb62127b02742fa9d754cd3bebf337f7a55d114c8e5cdd30be022040529b194ba3f9281a99f2b1c0a19c0489bc22ede944ccf4ecbab4cc618ef3ed01eeffffffef51e1b804cc89d182d279655c3aa89e815b1b309fe287d9b2b55d57b90ec68a0100000000ffffffff02202cb206000000001976a9148280b37df378db99f66f85c95a783a76ac7a6d5988ac9093510d000000001976a9143bde42dbee7e4dbe6a21b2d50ce2f0167faa815988ac000247304402203609e17b84f6a7d30c80bfa610b5b4542f32a8a0d5447a12fb1366d7f01cc44a0220573a954c4518331561406f90300e8f3358f51928d43c212a8caed02de67eebee0121025476c2e83188368da1ff3e292e7acafcdb3566bb0ad253f62fc70f07aeee635711000000";
    const SEGWIT_TXID: &str = "e8151a2af31c368a35053ddd4bdb285a8595c769a3ad83e0fa02314a602d4609";

    #[test]
    fn txids_are_computed_without_witnesses() {
        let legacy = parse(&parse_hex(LEGACY).expect("hex")).expect("parses");
        assert_eq!(legacy.txid, LEGACY_TXID);
        assert_eq!(legacy.scripts.len(), 2);
        assert_eq!(legacy.vsize, LEGACY.len() as u64 / 2, "no witness: the size itself");
        assert_eq!(
            legacy.inputs,
            vec![("0437cd7f8525ceed2324359c2d0ba26006d92d856a9c20fa0241106ee5a597c9".to_string(), 0)]
        );
        let segwit = parse(&parse_hex(SEGWIT).expect("hex")).expect("parses");
        assert_eq!(segwit.txid, SEGWIT_TXID);
        assert_eq!(segwit.scripts.len(), 2);
        // 343 bytes, 233 of them without the witness: weight 3 × 233 + 343 = 1042.
        assert_eq!((SEGWIT.len() / 2, segwit.vsize), (343, 261));
        assert_eq!(segwit.inputs.len(), 2);
        assert!(segwit.spends_all_of(&segwit) && !legacy.spends_all_of(&segwit));
    }

    #[test]
    fn the_anchor_output_is_found_and_truncated_or_padded_bytes_are_refused() {
        let data = super::super::anchor_data(&[7; 32]);
        // version, no segwit, one input, two outputs (change, OP_RETURN), locktime.
        let mut tx = vec![2, 0, 0, 0, 1];
        tx.extend([0xaa; 36]);
        tx.extend([0, 0xff, 0xff, 0xff, 0xff, 2]);
        tx.extend([1, 0, 0, 0, 0, 0, 0, 0, 22, 0x00, 0x14]);
        tx.extend([0x11; 20]);
        tx.extend([0; 8]);
        tx.extend([38, 0x6a, 36]);
        tx.extend(data);
        tx.extend([0; 4]);
        let parsed = parse(&tx).expect("parses");
        assert!(parsed.carries(&data));
        assert!(!parsed.carries(&super::super::anchor_data(&[8; 32])));
        assert_eq!(parse(&tx[..tx.len() - 1]), None, "truncated");
        let mut longer = tx.clone();
        longer.push(0);
        assert_eq!(parse(&longer), None, "trailing bytes");
        assert_eq!(parse(&[0xff; 12]), None);
    }
}
