//! The command line: `vmsh-scheduler [run]`, `validate [FILE]`, `verify RECEIPT`,
//! `status [--url URL]` and `migrate-state --to etcd|file [--force]`.

pub mod ctl;
pub mod migrate;
pub mod status;
pub mod verify;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::builder::ValueParser;
use clap::{Arg, ArgMatches, Args, FromArgMatches, Parser, Subcommand};

use crate::config;
use crate::config::settings::{Definition, Flag, Overrides, SETTINGS};

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
    /// The flags that override settings, made from the settings' definitions.
    #[command(flatten)]
    pub overrides: Overrides,
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
    /// Pause, resume, trigger or skip a namespace's cadence, or list what is paused, through a
    /// running scheduler's admin API (exit 0 done, 1 refused, 2 bad usage or token file, 3 not
    /// allowed or the admin API off, 4 not reachable or not now).
    ///
    /// The token is the first in --token-file, else VMSH_CTL_TOKEN_FILE, else
    /// VMSH_ADMIN_TOKEN_FILE (the scheduler's own file, on its host). docs/ADMIN.md describes
    /// each action.
    #[command(verbatim_doc_comment)]
    Ctl {
        /// pause, resume, trigger, skip, or paused (list).
        #[arg(value_enum)]
        action: ctl::Action,
        /// The namespace (not for paused).
        namespace: Option<String>,
        /// One cadence: fast, strong or cold (trigger and skip need one; pause and resume
        /// without one act on every cadence).
        #[arg(long, value_name = "CADENCE")]
        cadence: Option<String>,
        /// Why, kept with a pause and shown wherever it is.
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
        /// The scheduler's HTTP address (default: VMSH_CTL_URL, else http://127.0.0.1:METRICS_PORT).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// The file holding the admin token.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// Move the state between the state file and etcd, with every scheduler stopped (exit 0
    /// moved, 2 bad settings, 3 a state or etcd problem, 5 a scheduler runs on either side).
    ///
    /// --to etcd reads VMSH_STATE (with its log, as a start does) and writes each namespace's
    /// state under VMSH_ETCD_PREFIX; --to file reads the state in etcd (as a replica loads it)
    /// and writes a complete state file. It takes the state file's lock, refuses while a
    /// replica is registered under the prefix, and reads what it wrote back to compare.
    /// docs/OPERATIONS.md ("Migrating the state") says when to run it.
    #[command(verbatim_doc_comment)]
    MigrateState {
        /// Where the state goes: etcd (from the state file) or file (from etcd).
        #[arg(long, value_enum)]
        to: migrate::Destination,
        /// Replace state already there: delete the state keys under the prefix, or move the
        /// state file and its logs aside (to <name>.replaced-<time>).
        #[arg(long)]
        force: bool,
    },
}

/// Each setting's flag: global, checked as its variable is, and described in `--help` by
/// the setting's meaning, variable and default.
impl Args for Overrides {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.args(SETTINGS.iter().filter_map(|&setting| Some(flag_arg(setting, setting.flag()?))))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for Overrides {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut overrides = Overrides::default();
        overrides.update_from_arg_matches(matches)?;
        Ok(overrides)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for setting in SETTINGS {
            let Some(flag) = setting.flag() else { continue };
            let given = matches
                .try_get_one::<OsString>(flag.long)
                .map_err(|e| clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("--{}: {e}", flag.long)))?;
            if let Some(value) = given {
                self.set(setting.var(), value.clone());
            }
        }
        Ok(())
    }
}

/// The flag of `setting`. A path is taken as given, even when it is not UTF-8; any other value
/// is checked as the variable's would be, so that a bad one stops the command at once.
fn flag_arg(setting: &'static dyn Definition, flag: Flag) -> Arg {
    let parser = if setting.is_path() {
        ValueParser::os_string()
    } else {
        ValueParser::new(move |text: &str| setting.check(text).map(|()| OsString::from(text)))
    };
    Arg::new(flag.long)
        .long(flag.long)
        .value_name(flag.value_name)
        .global(true)
        .value_parser(parser)
        .help(flag_help(setting))
}

/// A flag's line in `--help`: "Meaning: what it takes [env: VAR] [default: …]".
fn flag_help(setting: &dyn Definition) -> String {
    let meaning = setting.meaning();
    let mut chars = meaning.chars();
    let capitalised: String = chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default();
    let accepts = if setting.is_path() { String::new() } else { format!(": {}", setting.accepts()) };
    format!("{capitalised}{accepts} [env: {}] [default: {}]", setting.var(), setting.default_value())
}

/// `vmsh-scheduler validate`: checks `file` (and the targets file), prints the verdict, and
/// returns the exit code: 0 valid, 2 otherwise.
pub fn validate(file: &Path, anchors: Option<&Path>, ctx: &config::LoadContext) -> i32 {
    match crate::scheduler::config::load(file, anchors, ctx) {
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
pub fn verify(receipt: &Path, opts: &crate::cli::verify::VerifyOptions) -> i32 {
    use crate::cli::verify::{Verdict, verify_receipt};
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
    let mut out = crate::cli::status::clean(line);
    if let Some((cut, _)) = out.char_indices().nth(MAX_LINE_CHARS) {
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    #[test]
    fn each_setting_with_a_flag_shows_its_variable_and_default_in_help() {
        Cli::command().debug_assert();
        let help = Cli::command().render_help().to_string();
        let mut flags = Vec::new();
        for setting in SETTINGS {
            let Some(flag) = setting.flag() else { continue };
            let usage = format!("--{} <{}>", flag.long, flag.value_name);
            let line = help.lines().find(|l| l.trim_start().starts_with(&usage)).expect("the flag's line in --help");
            let source = format!("[env: {}] [default: {}]", setting.var(), setting.default_value());
            assert!(line.ends_with(&source), "{line}");
            flags.push(flag.long);
        }
        assert_eq!(flags, ["root", "namespaces", "anchors", "state", "port", "bind", "log-level", "log-format"]);
    }

    #[test]
    fn a_flag_before_or_after_the_subcommand_overrides_its_setting() {
        for args in [["vmsh-scheduler", "--port", "9200", "status"], ["vmsh-scheduler", "status", "--port", "9200"]] {
            let cli = Cli::try_parse_from(args).expect("valid flags");
            assert_eq!(cli.overrides.get("METRICS_PORT"), Some(OsStr::new("9200")), "{args:?}");
        }
    }

    #[test]
    fn a_flag_value_its_setting_refuses_stops_the_command_with_the_settings_reason() {
        for (flag, value, reason) in [
            ("--port", "70000", "out of range: must be between 0 and 65535"),
            ("--bind", "localhost", "expected an IP address such as 0.0.0.0 or 127.0.0.1"),
            ("--log-level", "loud", "expected trace, debug, info, warn or error"),
        ] {
            let e = Cli::try_parse_from(["vmsh-scheduler", flag, value, "validate"]).expect_err(flag);
            assert_eq!((e.kind(), e.exit_code()), (ErrorKind::ValueValidation, 2), "{e}");
            assert!(e.to_string().contains(reason), "{e}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_path_flag_is_taken_as_given_even_when_it_is_not_utf8() {
        use std::os::unix::ffi::OsStrExt;
        let path = OsStr::from_bytes(b"/srv/\xff");
        let cli = Cli::try_parse_from([OsStr::new("vmsh-scheduler"), OsStr::new("--root"), path]).expect("valid");
        assert_eq!(cli.overrides.get("VMSH_ROOT"), Some(path));
    }
}
