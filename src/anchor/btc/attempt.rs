//! One attempt's transactions as the btc driver follows them: what it recorded before each
//! send, and what the wallet and the mempool say of each.

use serde_json::{Value, json};

use super::{fee, from_hex, tx, txid_of};

/// What an attempt recorded before it sent: its latest transaction, and every transaction
/// that one replaced. The progress record is `{"txid", "hex", "rate", "replaced"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Recorded {
    /// The latest transaction's txid.
    pub(super) txid: String,
    /// Its signed bytes, hex.
    pub(super) hex: String,
    /// Its fee rate, sat/kvB; absent in records written before fees were tracked.
    pub(super) rate: Option<u64>,
    /// The attempt's earlier transactions, oldest first, each replaced by the next.
    pub(super) replaced: Vec<String>,
}

impl Recorded {
    /// The record, if it is readable and its bytes are the transaction its txid names.
    pub(super) fn from_progress(progress: Option<&Value>) -> Option<Self> {
        let p = progress?;
        let txid = txid_of(&p["txid"])?;
        let hex = p["hex"].as_str()?.to_string();
        let parsed = tx::parse(&from_hex(&hex)?)?;
        let replaced = match &p["replaced"] {
            Value::Null => Vec::new(),
            Value::Array(list) => list.iter().map(txid_of).collect::<Option<Vec<_>>>()?,
            _ => return None,
        };
        (parsed.txid == txid).then_some(Self { txid, hex, rate: p["rate"].as_u64(), replaced })
    }

    pub(super) fn to_json(&self) -> Value {
        let mut record = json!({"txid": self.txid, "hex": self.hex});
        if let Some(rate) = self.rate {
            record["rate"] = json!(rate);
        }
        if !self.replaced.is_empty() {
            record["replaced"] = json!(self.replaced);
        }
        record
    }
}

/// Every transaction of one attempt, oldest first, and what it recorded.
pub(super) struct Attempt {
    pub(super) record: Option<Recorded>,
    pub(super) txids: Vec<String>,
}

impl Attempt {
    /// The attempt as recorded, with `pending` (the transaction the last look waited on) in
    /// case the record does not name it.
    pub(super) fn new(progress: Option<&Value>, pending: Option<&str>) -> Self {
        let record = Recorded::from_progress(progress);
        let mut txids = record.as_ref().map_or_else(Vec::new, |r| {
            let mut all = r.replaced.clone();
            all.push(r.txid.clone());
            all
        });
        if let Some(t) = pending.filter(|t| !txids.iter().any(|x| x == t)) {
            txids.push(t.to_string());
        }
        Self { record, txids }
    }

    /// How many replacements came before `txid`.
    pub(super) fn replacements(&self, txid: &str) -> u32 {
        let at = self.txids.iter().position(|t| t == txid).unwrap_or(self.txids.len());
        u32::try_from(at).unwrap_or(u32::MAX)
    }

    /// The recorded transaction `txid` was replaced by, if the attempt recorded one: it may
    /// not have reached the node yet.
    pub(super) fn recorded_after(&self, txid: &str) -> Option<&Recorded> {
        self.record.as_ref().filter(|r| r.replaced.iter().any(|t| t == txid))
    }
}

/// The block a transaction is in, as the wallet says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mined {
    pub(super) confirmations: u32,
    pub(super) block_hash: String,
    pub(super) height: u64,
    pub(super) block_time: i64,
    /// The transaction's bytes as the wallet has them (`gettransaction`'s `hex`).
    pub(super) hex: Option<String>,
}

/// Where the wallet says a transaction stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum WalletView {
    /// It does not list it.
    Unknown,
    /// It lists it with 0 confirmations: only the mempool can tell whether it still waits.
    Unconfirmed,
    /// In a block of the active chain.
    Mined(Mined),
    /// Conflicted: a double spend was mined that many blocks ago (negative).
    Conflicted(i64),
}

/// What the wallet says of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) txid: String,
    pub(super) view: WalletView,
    /// What it paid, satoshis, when the wallet paid it.
    pub(super) fee: Option<u64>,
    /// Its bytes, as the wallet has them.
    pub(super) hex: Option<String>,
    /// What the wallet replaced it with itself (`bumpfee`'s `replaced_by_txid`).
    pub(super) replaced_by: Option<String>,
}

impl Seen {
    /// Its fee rate, sat/kvB, from the wallet's fee and bytes.
    pub(super) fn rate(&self) -> Option<u64> {
        let vsize = self.hex.as_deref().and_then(from_hex).and_then(|b| tx::parse(&b))?.vsize;
        Some(fee::rate_of(self.fee?, vsize))
    }
}

/// Where an attempt stands, all of its transactions taken together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Standing {
    /// One of them is in a block (at most one can be: they spend the same coins).
    Mined(Mined, Seen),
    /// This one waits in the node's mempool.
    Live(Seen),
    /// Every one the wallet knows conflicts with a mined double spend that is none of ours.
    Conflicted {
        /// The newest of them.
        txid: String,
        /// Negative: how many blocks ago the double spend was mined.
        blocks: i64,
    },
    /// None is mined or in the mempool; the wallet lists these with 0 confirmations.
    Gone {
        /// The transactions the wallet still lists, to abandon.
        in_wallet: Vec<String>,
    },
}

/// The transaction an anchor waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Current {
    pub(super) txid: String,
    /// Its fee rate, sat/kvB (0 if nobody can tell).
    pub(super) rate: u64,
    /// Its bytes, to check a replacement against.
    pub(super) hex: Option<String>,
}

impl Current {
    pub(super) fn of_record(r: &Recorded) -> Self {
        Self { txid: r.txid.clone(), rate: r.rate.unwrap_or(0), hex: Some(r.hex.clone()) }
    }
}
