//! What an EVM anchor records before each send: the attempt's transactions, all with one
//! nonce, the latest (the only one ever sent again) in full and the ones it replaced by hash.
//!
//! Written as the attempt's progress, as one JSON object:
//!
//! ```json
//! {"txHash": "0x…", "raw": "0x02…", "nonce": 7, "from": "0x…", "chainId": 1,
//!  "maxFeePerGas": 30000000000, "maxPriorityFeePerGas": 1500000000,
//!  "sentMs": 1733500000000, "sentHeight": 21000000,
//!  "firstMaxFeePerGas": 20000000000, "replaced": ["0x…", "0x…"]}
//! ```
//!
//! Records written before replacements existed hold only the first five fields; they read as
//! a transaction that replaced nothing, its fees taken from its signed bytes.

use alloy::consensus::{TxEip1559, TxEnvelope};
use alloy::eips::Decodable2718;
use alloy::primitives::{Address, B256};
use serde_json::{Value, json};

use super::fees::Fees;
use crate::model::digest::{parse_hex, to_hex};

/// An attempt's transactions, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sent {
    /// The latest transaction's hash.
    pub(crate) hash: B256,
    /// Its signed bytes, sent again as they are.
    pub(crate) raw: Vec<u8>,
    /// It, decoded from `raw`; `None` for a transaction that is not EIP-1559 (never ours).
    pub(crate) tx: Option<TxEip1559>,
    /// The sender, as recorded.
    pub(crate) from: Option<Address>,
    /// When the latest transaction was recorded, to be sent (Unix ms).
    pub(crate) sent_ms: Option<i64>,
    /// The chain's height then.
    pub(crate) sent_height: Option<u64>,
    /// The first transaction's fee cap: the default cap counts from it.
    pub(crate) first_max_fee: Option<u128>,
    /// The transactions the latest replaced, oldest first.
    pub(crate) replaced: Vec<B256>,
}

impl Sent {
    /// Reads a recorded progress value; `None` when it is not one (or unreadable).
    pub(crate) fn read(progress: &Value) -> Option<Self> {
        let hash: B256 = progress.get("txHash")?.as_str()?.parse().ok()?;
        let raw = progress.get("raw")?.as_str()?.strip_prefix("0x").and_then(parse_hex)?;
        let tx = match TxEnvelope::decode_2718(&mut raw.as_slice()) {
            Ok(TxEnvelope::Eip1559(signed)) => Some(signed.strip_signature()),
            _ => None,
        };
        let replaced = match progress.get("replaced") {
            None => Vec::new(),
            Some(list) => list.as_array()?.iter().map(|h| h.as_str()?.parse().ok()).collect::<Option<_>>()?,
        };
        Some(Self {
            hash,
            raw,
            tx,
            from: progress.get("from").and_then(Value::as_str).and_then(|a| a.parse().ok()),
            sent_ms: progress.get("sentMs").and_then(Value::as_i64),
            sent_height: progress.get("sentHeight").and_then(Value::as_u64),
            first_max_fee: progress.get("firstMaxFeePerGas").and_then(Value::as_u64).map(u128::from),
            replaced,
        })
    }

    /// A transaction known only by the hash in a pending anchor's data (written before its
    /// signed bytes were recorded): it can be looked up, never sent again.
    pub(crate) fn hash_only(data: &Value) -> Option<Self> {
        let hash: B256 = data.get("txHash")?.as_str()?.parse().ok()?;
        Some(Self {
            hash,
            raw: Vec::new(),
            tx: None,
            from: None,
            sent_ms: None,
            sent_height: None,
            first_max_fee: None,
            replaced: Vec::new(),
        })
    }

    /// The record of a first transaction.
    pub(crate) fn first(
        hash: B256,
        raw: Vec<u8>,
        tx: TxEip1559,
        from: Address,
        sent_ms: i64,
        sent_height: u64,
    ) -> Self {
        let first_max_fee = Some(tx.max_fee_per_gas);
        Self {
            hash,
            raw,
            tx: Some(tx),
            from: Some(from),
            sent_ms: Some(sent_ms),
            sent_height: Some(sent_height),
            first_max_fee,
            replaced: Vec::new(),
        }
    }

    /// The record once `tx` (signed as `raw`, hashing to `hash`) replaces the latest.
    pub(crate) fn replaced_by(&self, hash: B256, raw: Vec<u8>, tx: TxEip1559, sent_ms: i64, sent_height: u64) -> Self {
        let mut replaced = self.replaced.clone();
        replaced.push(self.hash);
        Self {
            hash,
            raw,
            first_max_fee: self.first_max_fee.or(self.tx.as_ref().map(|t| t.max_fee_per_gas)),
            tx: Some(tx),
            from: self.from,
            sent_ms: Some(sent_ms),
            sent_height: Some(sent_height),
            replaced,
        }
    }

    /// Every transaction of the attempt, the latest first: any of them may be the one mined.
    pub(crate) fn hashes(&self) -> impl Iterator<Item = B256> + '_ {
        std::iter::once(self.hash).chain(self.replaced.iter().rev().copied())
    }

    /// The latest transaction's fees.
    pub(crate) fn fees(&self) -> Option<Fees> {
        self.tx.as_ref().map(|t| Fees { max_fee: t.max_fee_per_gas, tip: t.max_priority_fee_per_gas })
    }

    /// The nonce all of them share.
    pub(crate) fn nonce(&self) -> Option<u64> {
        self.tx.as_ref().map(|t| t.nonce)
    }

    /// The record as written to the attempt's progress.
    pub(crate) fn to_json(&self) -> Value {
        let fees = self.fees();
        json!({
            "txHash": format!("{:#x}", self.hash),
            "raw": format!("0x{}", to_hex(&self.raw)),
            "nonce": self.nonce(),
            "from": self.from.map(|a| format!("{a:#x}")),
            "chainId": self.tx.as_ref().map(|t| t.chain_id),
            "maxFeePerGas": fees.map(|f| wei(f.max_fee)),
            "maxPriorityFeePerGas": fees.map(|f| wei(f.tip)),
            "sentMs": self.sent_ms,
            "sentHeight": self.sent_height,
            "firstMaxFeePerGas": self.first_max_fee.map(wei),
            "replaced": self.replaced.iter().map(|h| format!("{h:#x}")).collect::<Vec<_>>(),
        })
    }
}

/// Fees are capped at `u64::MAX` wei per gas when configured and checked against it when
/// estimated, so this never saturates in practice.
pub(crate) fn wei(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use alloy::consensus::{SignableTransaction, TxEip1559};
    use alloy::eips::Encodable2718;
    use alloy::network::TxSignerSync;
    use alloy::primitives::{Bytes, TxKind, U256};
    use alloy::signers::local::PrivateKeySigner;

    use super::*;

    fn signed(nonce: u64, max_fee: u128, tip: u128) -> (B256, Vec<u8>, TxEip1559) {
        let signer = PrivateKeySigner::from_bytes(&B256::from([7u8; 32])).expect("key");
        let mut tx = TxEip1559 {
            chain_id: 31337,
            nonce,
            gas_limit: 30_000,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
            to: TxKind::Call(signer.address()),
            value: U256::ZERO,
            access_list: Default::default(),
            input: Bytes::from_static(b"VMSH"),
        };
        let sig = signer.sign_transaction_sync(&mut tx).expect("sign");
        let envelope = TxEnvelope::from(tx.clone().into_signed(sig));
        (*envelope.tx_hash(), envelope.encoded_2718(), tx)
    }

    #[test]
    fn a_record_reads_back_with_every_replacement() {
        let (h1, raw1, tx1) = signed(4, 20, 2);
        let first = Sent::first(h1, raw1, tx1, Address::ZERO, 1_000, 10);
        let (h2, raw2, tx2) = signed(4, 23, 3);
        let second = first.replaced_by(h2, raw2, tx2, 2_000, 13);
        let back = Sent::read(&second.to_json()).expect("reads");
        assert_eq!(back, second);
        assert_eq!(back.hashes().collect::<Vec<_>>(), vec![h2, h1], "the latest first");
        assert_eq!(back.first_max_fee, Some(20));
        assert_eq!(back.fees(), Some(Fees { max_fee: 23, tip: 3 }));
        assert_eq!((back.nonce(), back.sent_ms, back.sent_height), (Some(4), Some(2_000), Some(13)));
    }

    #[test]
    fn a_record_from_before_replacements_reads_as_one_transaction() {
        let (h, raw, _) = signed(9, 50, 5);
        let old = json!({"txHash": format!("{h:#x}"), "raw": format!("0x{}", to_hex(&raw)), "nonce": 9,
            "from": "0x0000000000000000000000000000000000000001", "chainId": 31337});
        let sent = Sent::read(&old).expect("reads");
        assert_eq!(sent.hashes().collect::<Vec<_>>(), vec![h]);
        assert_eq!(sent.fees(), Some(Fees { max_fee: 50, tip: 5 }), "taken from the signed bytes");
        assert_eq!((sent.sent_ms, sent.first_max_fee), (None, None));
        assert!(Sent::read(&json!({"txHash": "0x01"})).is_none());
        assert!(Sent::read(&json!({"txHash": format!("{h:#x}"), "raw": "0x02", "replaced": [1]})).is_none());
    }
}
