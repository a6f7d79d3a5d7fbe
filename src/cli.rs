//! The command line: `vmsh-scheduler [run]`, `validate [FILE]`, `verify RECEIPT` and
//! `status [--url URL]`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config;
use crate::config::settings::Overrides;

/// vmsh-scheduler: anchors each VaultMesh namespace's latest Merkle root on its cadences.
///
/// Settings come from the environment (and `.env`); flags override them.
#[derive(Debug, Parser)]
#[command(name = "vmsh-scheduler", version, about, long_about = None)]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Read environment variables from this file instead of ./.env.
    #[arg(long, global = true, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Working root (VMSH_ROOT); `verify` reads local: journals under it.
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Namespaces YAML (VMSH_NAMESPACES).
    #[arg(long, global = true, value_name = "FILE")]
    pub namespaces: Option<PathBuf>,
    /// Targets YAML (VMSH_ANCHORS).
    #[arg(long, global = true, value_name = "FILE")]
    pub anchors: Option<PathBuf>,
    /// State file (VMSH_STATE).
    #[arg(long, global = true, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// HTTP port (METRICS_PORT); 0 picks a free port.
    #[arg(long, global = true)]
    pub port: Option<u16>,
    /// HTTP bind address (METRICS_HOST).
    #[arg(long, global = true)]
    pub bind: Option<IpAddr>,
    /// trace, debug, info, warn or error (LOG_LEVEL).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// json or text (LOG_FORMAT).
    #[arg(long, global = true)]
    pub log_format: Option<String>,
    /// If the state file is corrupt, move it aside (to FILE.corrupt-<time>) and start empty.
    #[arg(long, global = true)]
    pub reset_corrupt_state: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the scheduler (the default).
    Run,
    /// Check a namespaces file (and the targets file) and list every problem.
    Validate {
        /// The namespaces file (default: VMSH_NAMESPACES).
        file: Option<PathBuf>,
    },
    /// Re-check a receipt against what it attests (exit 0 verified, 1 mismatch, 2 not verifiable).
    ///
    /// Prints each check that passed ("ok:"), each field no evidence backs ("not evidence:"),
    /// then one verdict line:
    ///
    ///   VERIFIED        exit 0: every field was checked against the evidence, or is listed as
    ///                   not evidence.
    ///   FAILED          exit 1: the evidence contradicts the receipt (or the receipt itself:
    ///                   its time is not its timeMs, its file name or folder not the ones its
    ///                   fields give).
    ///   NOT VERIFIABLE  exit 2: no such file; not a receipt this service writes (not JSON,
    ///                   another format version, an unknown or missing field, a value of the
    ///                   wrong form); the evidence could not be had (journal not found, node not
    ///                   reachable, trust bundle unreadable); or an exec: receipt.
    ///
    /// A local: receipt is checked against ROOT/out/journal/<name>.jsonl, where ROOT is --root,
    /// else VMSH_ROOT (default: the working folder), wherever the receipt itself sits: for a
    /// receipt copied elsewhere, give --root the root whose journals it names. eip155: and btc:
    /// receipts are checked through a node (--rpc, else the target's entry in the targets file:
    /// --anchors or VMSH_ANCHORS); an rfc3161: token's signature with --trust-bundle, else the
    /// entry's trustBundle. docs/RECEIPTS.md ("Verifying a receipt") lists every field each
    /// scheme checks.
    #[command(verbatim_doc_comment)]
    Verify {
        /// The receipt (a JSON file, as written under out/anchors/<namespace>/).
        receipt: PathBuf,
        /// Trusted CA bundle (PEM) for rfc3161 tokens; default: the target's trustBundle.
        #[arg(long, value_name = "PEM")]
        trust_bundle: Option<PathBuf>,
        /// Node JSON-RPC URL for eip155 and btc receipts; default: the target's rpcUrl.
        #[arg(long, value_name = "URL")]
        rpc: Option<String>,
    },
    /// Print a running scheduler's status table from its /health (exit 0 healthy or degraded,
    /// 1 unhealthy, 2 not reachable or not its health).
    ///
    /// Exit 2 (one line on stderr saying why) when nothing answers, or when the answer is not
    /// this service's health: JSON that names another "service" than vmsh-scheduler, or names
    /// none and lacks the shape of its /health.
    Status {
        /// The scheduler's HTTP address (default: http://127.0.0.1:METRICS_PORT, or METRICS_HOST
        /// when it is a specific address).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
}

impl Cli {
    /// The flags that override environment settings.
    pub fn overrides(&self) -> Overrides {
        let mut o = Overrides::default();
        let paths = [("VMSH_ROOT", &self.root), ("VMSH_NAMESPACES", &self.namespaces), ("VMSH_ANCHORS", &self.anchors)];
        for (var, value) in paths.into_iter().chain([("VMSH_STATE", &self.state)]) {
            if let Some(path) = value {
                o.set(var, path.clone());
            }
        }
        let texts = [
            ("METRICS_PORT", self.port.map(|p| p.to_string())),
            ("METRICS_HOST", self.bind.map(|b| b.to_string())),
            ("LOG_LEVEL", self.log_level.clone()),
            ("LOG_FORMAT", self.log_format.clone()),
        ];
        for (var, value) in texts {
            if let Some(text) = value {
                o.set(var, text);
            }
        }
        o
    }
}

/// `vmsh-scheduler validate`: checks `file` (and the targets file), prints the verdict, and
/// returns the exit code: 0 valid, 2 otherwise.
pub fn validate(file: &Path, anchors: Option<&Path>, ctx: &config::LoadContext) -> i32 {
    match config::load(file, anchors, ctx) {
        Ok(cfg) => {
            crate::stdio::out(&format!(
                "{}: valid, {} namespace(s), sha256 {}\n",
                file.display(),
                cfg.namespaces.len(),
                cfg.hash
            ));
            0
        }
        Err(errors) => {
            for e in &errors.0 {
                crate::stdio::err(&e.to_string());
            }
            crate::stdio::err(&format!("{} problem(s) found", errors.0.len()));
            2
        }
    }
}

/// `vmsh-scheduler verify`: prints every check that passed (`ok:`), every stated field no
/// evidence backs (`not evidence:`) and the verdict on the last line (VERIFIED, FAILED or NOT
/// VERIFIABLE); returns the exit code: 0 verified, 1 a mismatch, 2 not verifiable.
pub fn verify(receipt: &Path, opts: &crate::verify::VerifyOptions) -> i32 {
    use crate::verify::{Verdict, verify_receipt};
    let report = verify_receipt(receipt, opts);
    for p in &report.passed {
        crate::stdio::out(&format!("{}\n", shown(&format!("ok: {p}"))));
    }
    for n in &report.not_evidence {
        crate::stdio::out(&format!("{}\n", shown(&format!("not evidence: {n}"))));
    }
    let last = match &report.verdict {
        Verdict::Verified => format!("VERIFIED {}", receipt.display()),
        Verdict::Failed(why) => format!("FAILED {}: {why}", receipt.display()),
        Verdict::Unverifiable(why) => format!("NOT VERIFIABLE {}: {why}", receipt.display()),
    };
    crate::stdio::out(&format!("{}\n", shown(&last)));
    report.verdict.exit_code()
}

/// Longest line `verify` prints; a hostile receipt's field name may be a megabyte long.
const MAX_LINE_CHARS: usize = 2000;

/// A line of `verify` output fit for a terminal: what the receipt put there (an unknown
/// field's name, a value quoted in a reason) is shown, its control characters escaped, not
/// obeyed, and cut at [`MAX_LINE_CHARS`].
fn shown(line: &str) -> String {
    let mut out = crate::status::clean(line);
    if let Some((cut, _)) = out.char_indices().nth(MAX_LINE_CHARS) {
        out.truncate(cut);
        out.push('…');
    }
    out
}
