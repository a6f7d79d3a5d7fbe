//! The targets file (`VMSH_ANCHORS`) as the drivers configure it: one section per driver,
//! each defined in the driver's `config` module and read by the loader they share
//! ([`crate::config::targets`]), and which entry a target a namespace names uses.
//!
//! Sections `local`, `exec`, `eip155`, `btc` and `rfc3161`, each a map of named entries. A namespace's
//! target resolves to an entry by its section's rule ([`TargetsConfig::resolve`]):
//!
//! - `local:<name>` needs no entry; `local.<name>` only says how it aggregates;
//! - `exec:<name>` → `exec.<name>`;
//! - `eip155:<chain id>` → the entry named by the chain id (`eip155."8453"`), else the entry
//!   whose `chainId` is that id, else `eip155.default` (whose `chainId`, if set, must match);
//! - `btc:<name>` → `btc.<name>`, else `btc.default`;
//! - `rfc3161:<name>` → `rfc3161.<name>`, else `rfc3161.default`.
//!
//! An entry whose `${VAR}` is not set is unusable; that is an error only if a namespace uses it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::btc::{BtcSpec, BtcTarget};
use super::eip155::{EvmSpec, EvmTarget};
use super::exec::{ExecSpec, ExecTarget};
use super::local::{LocalSpec, LocalTarget};
use super::rfc3161::{TsaSpec, TsaTarget};
use crate::config::aggregate::AggregateSpec;
use crate::config::targets::{Entry, LoadContext, Section, Sections, TargetsDocument};
use crate::config::vars::Secrets;
use crate::config::{ConfigErrors, TargetCatalog};
use crate::model::{Scheme, Target};

/// The targets file as written: one field per section. (Its name is in serde's messages
/// about a file that is not a mapping.)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsFile {
    #[serde(default)]
    local: BTreeMap<String, LocalSpec>,
    #[serde(default)]
    exec: BTreeMap<String, ExecSpec>,
    #[serde(default)]
    eip155: BTreeMap<String, EvmSpec>,
    #[serde(default)]
    btc: BTreeMap<String, BtcSpec>,
    #[serde(default)]
    rfc3161: BTreeMap<String, TsaSpec>,
}

/// Everything the targets file configures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetsConfig {
    /// `local:` journals that aggregate, by name.
    pub local: BTreeMap<String, LocalTarget>,
    /// External commands by name.
    pub exec: BTreeMap<String, ExecTarget>,
    /// EVM entries by name.
    pub eip155: BTreeMap<String, Entry<EvmTarget>>,
    /// Bitcoin entries by name.
    pub btc: BTreeMap<String, Entry<BtcTarget>>,
    /// TSA entries by name.
    pub rfc3161: BTreeMap<String, Entry<TsaTarget>>,
}

/// The entry a target resolves to.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved<'a> {
    /// Built in: no entry needed.
    Local,
    /// `exec.<name>`.
    Exec(&'a str, &'a ExecTarget),
    /// `eip155.<name>`.
    Evm(&'a str, &'a EvmTarget),
    /// `btc.<name>`.
    Btc(&'a str, &'a BtcTarget),
    /// `rfc3161.<name>`.
    Tsa(&'a str, &'a TsaTarget),
}

impl TargetsDocument for TargetsConfig {
    type Raw = TargetsFile;

    fn build(raw: TargetsFile, sections: &mut Sections<'_>) -> Self {
        TargetsConfig {
            local: sections.build::<LocalTarget>(raw.local),
            exec: sections.build::<ExecTarget>(raw.exec),
            eip155: sections.build::<EvmTarget>(raw.eip155),
            btc: sections.build::<BtcTarget>(raw.btc),
            rfc3161: sections.build::<TsaTarget>(raw.rfc3161),
        }
    }
}

impl TargetsConfig {
    /// Parses and validates a targets file; `file` only labels errors.
    pub fn parse(bytes: &[u8], file: &Path, ctx: &LoadContext) -> Result<Self, ConfigErrors> {
        crate::config::targets::parse(bytes, file, ctx)
    }

    /// The entry `target` resolves to, by its section's rule.
    pub fn resolve(&self, target: &Target) -> Result<Resolved<'_>, String> {
        match target.scheme {
            Scheme::Local => Ok(Resolved::Local),
            Scheme::Exec => ExecTarget::resolve(&self.exec, target).map(|(n, t)| Resolved::Exec(n, t)),
            Scheme::Eip155 => EvmTarget::resolve(&self.eip155, target).map(|(n, t)| Resolved::Evm(n, t)),
            Scheme::Btc => BtcTarget::resolve(&self.btc, target).map(|(n, t)| Resolved::Btc(n, t)),
            Scheme::Rfc3161 => TsaTarget::resolve(&self.rfc3161, target).map(|(n, t)| Resolved::Tsa(n, t)),
        }
    }

    /// How `target` aggregates, when its entry says it does (a `local:` target without an
    /// entry, or one whose entry cannot be used, does not).
    pub fn aggregation(&self, target: &Target) -> Option<AggregateSpec> {
        match self.resolve(target).ok()? {
            Resolved::Local => self.local.get(&target.name)?.aggregate,
            Resolved::Exec(_, t) => t.aggregate,
            Resolved::Evm(_, t) => t.aggregate,
            Resolved::Btc(_, t) => t.aggregate,
            Resolved::Tsa(_, t) => t.aggregate,
        }
    }

    /// How many of `target`'s jobs may run at once, when its entry says; and the field that
    /// says it (`exec.stamp.concurrency`), which a saturated target's log line names.
    pub fn concurrency(&self, target: &Target) -> (Option<u32>, String) {
        let (entry, limit) = match self.resolve(target) {
            Ok(Resolved::Local) => (target.name.as_str(), self.local.get(&target.name).and_then(|t| t.concurrency)),
            Ok(Resolved::Exec(name, t)) => (name, t.concurrency),
            Ok(Resolved::Evm(name, t)) => (name, t.concurrency),
            Ok(Resolved::Btc(name, t)) => (name, t.concurrency),
            Ok(Resolved::Tsa(name, t)) => (name, t.concurrency),
            Err(_) => (target.name.as_str(), None),
        };
        (limit, format!("{}.{entry}.concurrency", target.scheme))
    }

    /// Every secret of every usable entry. Text from any target is cleaned of all of them,
    /// not only of its own: an exec command inherits the scheduler's environment, where the
    /// other targets' keys and passwords often live.
    ///
    /// Each section says what its entries hold that must never be repeated (see
    /// `Redactor`). Everything a user could put a credential into counts, whether or not it
    /// looks like one: the URL's user info, path and query, keys, passwords and their files,
    /// the cookie file, and every `env` value of an exec command (a setting cannot be told
    /// from a token). Not counted: an exec command's argv, which any local user can read in
    /// the process list anyway, so it is no place for a secret.
    pub fn secrets(&self) -> Secrets {
        let mut secrets = Secrets::new();
        for t in self.exec.values() {
            secrets.extend(&t.secrets());
        }
        for t in self.eip155.values().filter_map(Entry::ready) {
            secrets.extend(&t.secrets());
        }
        for t in self.btc.values().filter_map(Entry::ready) {
            secrets.extend(&t.secrets());
        }
        for t in self.rfc3161.values().filter_map(Entry::ready) {
            secrets.extend(&t.secrets());
        }
        secrets
    }
}

impl TargetCatalog for TargetsConfig {
    /// Checks that a target a namespace names resolves to a usable entry, and what its
    /// section checks once an entry is used (that an rfc3161 trust bundle is a readable PEM
    /// bundle).
    fn check(&self, target: &Target) -> Result<(), String> {
        match self.resolve(target)? {
            Resolved::Local => Ok(()),
            Resolved::Exec(name, t) => t.check_when_used(name),
            Resolved::Evm(name, t) => t.check_when_used(name),
            Resolved::Btc(name, t) => t.check_when_used(name),
            Resolved::Tsa(name, t) => t.check_when_used(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::anchor::btc::BtcAuth;
    use crate::config::vars::{Secret, Vars};

    const KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

    fn ctx(vars: &[(&str, &str)]) -> LoadContext {
        LoadContext {
            vars: Vars::new(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))),
            root: PathBuf::from("/srv/vm"),
        }
    }

    fn parse_str(yaml: &str, c: &LoadContext) -> Result<TargetsConfig, ConfigErrors> {
        TargetsConfig::parse(yaml.as_bytes(), Path::new("anchors.yaml"), c)
    }

    fn target(s: &str) -> Target {
        Target::parse(s).expect("target")
    }

    const REFERENCE: &str = include_str!("../../tests/fixtures/anchors.vm-spawn.yaml");

    #[test]
    fn the_reference_targets_file_is_accepted_as_it_is() {
        // Without its variables every entry is there but unusable …
        let t = parse_str(REFERENCE, &ctx(&[])).expect("reference targets file is valid");
        let e = t.resolve(&target("eip155:8453")).expect_err("EVM_RPC unset");
        assert!(e.contains("EVM_RPC is not set"), "{e}");
        // … and with them it resolves, interpolating ${VAR} and ${VAR:-default}.
        let c = ctx(&[
            ("EVM_RPC", "https://base.example/rpc"),
            ("EVM_CHAIN_ID", "8453"),
            ("EVM_CONTRACT", ""),
            ("EVM_ANCHOR_KEY", KEY),
            ("BTC_RPC", "http://127.0.0.1:8332"),
            ("TSA_URL", "https://tsa.example/tsr"),
        ]);
        let t = parse_str(REFERENCE, &c).expect("valid");
        let Ok(Resolved::Evm(name, evm)) = t.resolve(&target("eip155:8453")) else { panic!("evm") };
        assert_eq!((name, evm.chain_id, evm.contract, evm.confirmations), ("default", Some(8453), None, 12));
        let Ok(Resolved::Tsa(_, tsa)) = t.resolve(&target("rfc3161:tsa")) else { panic!("tsa") };
        assert_eq!(tsa.policy_oid, None, "${{TSA_POLICY_OID:-\"\"}} is empty");
        assert_eq!(tsa.trust_bundle, Some(PathBuf::from("/srv/vm/services/anchors/certs/tsa-bundle.pem")));
        let e = t.resolve(&target("btc:mainnet")).expect_err("no credentials");
        assert!(e.contains("no RPC credentials"), "{e}");
        let e = t.resolve(&target("eip155:1")).expect_err("chain 1 is not configured");
        assert!(e.contains("chainId is 8453"), "{e}");
        // bitcoind URLs often carry their credentials; they are taken out of the URL.
        let c = ctx(&[("BTC_RPC", "http://vmsh:hunter2@127.0.0.1:18443/")]);
        let t = parse_str(REFERENCE, &c).expect("valid");
        let Ok(Resolved::Btc(_, btc)) = t.resolve(&target("btc:mainnet")) else { panic!("btc") };
        assert_eq!(
            (btc.rpc_url.expose(), btc.chain.as_str(), btc.confirmations),
            ("http://127.0.0.1:18443/", "regtest", 6)
        );
        assert_eq!(btc.auth, BtcAuth::UserPassword { user: "vmsh".into(), password: Secret::new("hunter2") });
    }

    #[test]
    fn eip155_resolves_by_name_then_chain_id_then_default() {
        let yaml = format!(
            "eip155:\n  default: {{rpcUrl: 'http://a', key: '{KEY}'}}\n  base: {{rpcUrl: 'http://b', chainId: 8453, key: '{KEY}'}}\n  '1': {{rpcUrl: 'http://c', key: '{KEY}'}}\n"
        );
        let t = parse_str(&yaml, &ctx(&[])).expect("valid");
        let name = |s: &str| match t.resolve(&target(s)) {
            Ok(Resolved::Evm(n, _)) => n.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(name("eip155:1"), "1");
        assert_eq!(name("eip155:8453"), "base");
        assert_eq!(name("eip155:10"), "default");
    }

    #[test]
    fn secrets_stay_out_of_errors_and_debug_output() {
        let secret = "0xthisisnotakeybutasecretpassword";
        let e = parse_str(&format!("eip155:\n  default: {{rpcUrl: 'http://a', key: '{secret}'}}\n"), &ctx(&[]))
            .expect_err("bad key");
        assert!(!e.to_string().contains("secretpassword"), "{e}");
        let e = parse_str(&format!("eip155:\n  default: {{rpcUrl: 'http://a', chainId: '{secret}'}}\n"), &ctx(&[]))
            .expect_err("bad chain id");
        assert!(!e.to_string().contains("secretpassword"), "{e}");
        let t =
            parse_str(&format!("eip155:\n  default: {{rpcUrl: 'http://a', key: '{KEY}'}}\n"), &ctx(&[])).expect("ok");
        assert!(!format!("{t:?}").contains(&KEY[4..20]));
        let t = parse_str("btc:\n  default: {rpcUrl: 'http://a', rpcUser: u, rpcPassword: hunter2}\n", &ctx(&[]))
            .expect("ok");
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn exec_entries_are_validated() {
        let t = parse_str("exec:\n  notify: {command: [./anchor.sh, --fast], timeout: 30s, env: {A: b}}\n", &ctx(&[]))
            .expect("valid");
        let e = &t.exec["notify"];
        assert_eq!(e.command, vec!["./anchor.sh", "--fast"]);
        assert_eq!(e.timeout, Some(Duration::from_secs(30)));
        for bad in [
            "exec:\n  n: {command: []}\n",
            "exec:\n  n: {command: [x], timeout: 0s}\n",
            "exec:\n  n: {command: [x], shell: true}\n",
            "exec:\n  'bad name': {command: [x]}\n",
            "ipfs: {}\n",
            "eip155:\n  d: {rpcUrl: 'ftp://x', key: k}\n",
            "btc:\n  d: {rpcUrl: 'http://x', network: moon}\n",
            "rfc3161:\n  d: {url: 'http://x', policyOID: nope}\n",
            "rfc3161:\n  d: {url: 'http://x', timeot: 5s}\n",
        ] {
            assert!(parse_str(bad, &ctx(&[])).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_problem_of_the_targets_file_is_reported() {
        let e = parse_str("ipfs: {}\nexec:\n  a: {command: []}\n  b: {command: [x], shell: true}\n", &ctx(&[]))
            .expect_err("invalid");
        let fields: Vec<&str> = e.0.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"ipfs"), "{e}");
        assert!(fields.contains(&"exec.b.shell"), "{e}");
        assert!(fields.contains(&"exec.a.command"), "{e}");
    }

    #[test]
    fn a_target_without_an_entry_is_an_error_naming_the_fix() {
        let t = TargetsConfig::default();
        for (s, hint) in
            [("exec:x", "exec:"), ("btc:mainnet", "btc:"), ("rfc3161:tsa", "rfc3161:"), ("eip155:1", "eip155:")]
        {
            let e = t.check(&target(s)).expect_err(s);
            assert!(e.contains(hint) && e.contains("VMSH_ANCHORS"), "{e}");
        }
        assert_eq!(t.check(&target("local:j")), Ok(()));
    }

    #[test]
    fn errors_stay_on_one_line_and_name_fields_not_values() {
        for yaml in [
            "exec:\n  \"a\\nb\": {command: [x]}\n",
            "exec:\n  n: {command: [x], \"sh\\nell\": 1}\n",
            "btc:\n  \"a\\r\\nb\": {rpcUrl: 'ftp://x'}\n",
            "\"ip\\nfs\": {}\n",
        ] {
            let e = parse_str(yaml, &ctx(&[])).expect_err(yaml);
            for line in e.0.iter().map(ToString::to_string) {
                assert!(line.starts_with("anchors.yaml: ") && !line.contains(['\n', '\r']), "{line:?}");
            }
        }
        // A secret where a policy OID or a duration belongs (a variable set to the wrong
        // value) is not printed either.
        let secret = "http://vmsh:hunter2-secret@127.0.0.1:18443";
        for field in ["policyOID", "timeout"] {
            let e = parse_str(&format!("rfc3161:\n  d: {{url: 'http://a', {field}: '{secret}'}}\n"), &ctx(&[]))
                .expect_err("refused");
            assert!(!e.to_string().contains("hunter2"), "{e}");
            assert!(e.to_string().contains(field), "{e}");
        }
        // A secret in a key's place is still not printed, however the entry is broken.
        let secret = "0xsupersecretvalue";
        let e = parse_str(&format!("eip155:\n  d: {{rpcUrl: 'http://a', key: \"{secret}\\n\"}}\n"), &ctx(&[]))
            .expect_err("bad key");
        assert!(!e.to_string().contains("supersecret"), "{e}");
    }

    #[test]
    fn deep_flow_nesting_is_refused_before_parsing() {
        let deep = format!("exec: {}", "{a: ".repeat(1_000_000));
        let started = std::time::Instant::now();
        let e = parse_str(&deep, &ctx(&[])).expect_err("too deep");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(e.to_string().contains("nest more than 64 levels"), "{e}");
        assert_eq!(e.0.len(), 1);
    }

    #[test]
    fn every_targets_corpus_file_parses_or_fails_with_errors_naming_the_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus/targets");
        let mut files: Vec<_> = std::fs::read_dir(&dir).expect("corpus").map(|e| e.expect("entry").path()).collect();
        files.sort();
        assert!(files.len() >= 5, "{} corpus files", files.len());
        for path in files {
            let name = path.file_name().and_then(|n| n.to_str()).expect("name").to_string();
            match TargetsConfig::parse(&std::fs::read(&path).expect("read"), &path, &ctx(&[])) {
                Ok(_) => assert!(name.starts_with("valid-"), "{name} parsed"),
                Err(errs) => {
                    assert!(name.starts_with("invalid-"), "{name}: {errs}");
                    assert!(errs.0.len() >= 8, "{name}: every problem is reported: {errs}");
                    for e in errs.0 {
                        assert_eq!(e.file, path);
                        assert!(!e.reason.is_empty() && !e.to_string().contains('\n'), "{name}: {e}");
                    }
                }
            }
        }
    }
    #[test]
    fn any_section_may_aggregate_and_a_bad_aggregate_is_one_line_naming_file_field_and_reason() {
        let yaml = "local:\n  j: {aggregate: {window: 10s, maxLeaves: 8}}\n  plain: {}\n\
                    exec:\n  e: {command: [notary], aggregate: {window: 500ms}}\n\
                    rfc3161:\n  tsa: {url: 'https://tsa.example/', aggregate: {window: 1m, maxLeaves: 3}}\n";
        let t = parse_str(yaml, &ctx(&[])).expect("valid");
        let spec = |target: &str| t.aggregation(&Target::parse(target).expect("target"));
        assert_eq!(spec("local:j"), Some(AggregateSpec { window: Duration::from_secs(10), max_leaves: 8 }));
        assert_eq!(spec("exec:e"), Some(AggregateSpec { window: Duration::from_millis(500), max_leaves: 1_024 }));
        assert_eq!(spec("rfc3161:tsa").map(|s| s.max_leaves), Some(3));
        assert_eq!(spec("local:plain"), None, "an entry without aggregate does not aggregate");
        assert_eq!(spec("local:other"), None, "nor does a local target without an entry");
        let bad = "local:\n  j: {aggregate: {window: 50ms}}\n\
                   exec:\n  e: {command: [notary], aggregate: {window: 1s, maxLeaves: 0}}\n\
                   btc:\n  b: {rpcUrl: 'http://n/', aggregate: {window: 1s, leaves: 3}}\n";
        let e = parse_str(bad, &ctx(&[])).expect_err("invalid");
        let shown: Vec<String> = e.0.iter().map(ToString::to_string).collect();
        for want in [
            "anchors.yaml: local.j.aggregate.window: is shorter than 100ms",
            "anchors.yaml: exec.e.aggregate.maxLeaves: must be 1 to 65536",
            "anchors.yaml: btc.b.aggregate.leaves: unknown field `leaves`, expected `window` or `maxLeaves`",
        ] {
            assert!(shown.iter().any(|l| l == want), "{want:?} not in {shown:#?}");
        }
    }

    #[test]
    fn any_section_may_set_its_concurrency_and_a_bad_one_is_one_line_naming_file_field_and_reason() {
        let yaml = "local:\n  j: {concurrency: 3}\n\
                    exec:\n  e: {command: [notary], concurrency: '200'}\n\
                    eip155:\n  default: {rpcUrl: 'http://127.0.0.1:8545', key: '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d', concurrency: 2}\n\
                    rfc3161:\n  tsa: {url: 'https://tsa.example/'}\n";
        let t = parse_str(yaml, &ctx(&[])).expect("valid");
        let of = |target: &str| t.concurrency(&Target::parse(target).expect("target"));
        assert_eq!(of("local:j"), (Some(3), "local.j.concurrency".to_string()));
        assert_eq!(of("local:other"), (None, "local.other.concurrency".to_string()), "no entry: the field to add");
        assert_eq!(of("exec:e"), (Some(200), "exec.e.concurrency".to_string()));
        assert_eq!(of("eip155:8453"), (Some(2), "eip155.default.concurrency".to_string()), "named by the entry used");
        assert_eq!(of("rfc3161:tsa"), (None, "rfc3161.tsa.concurrency".to_string()));
        let bad = "exec:\n  e: {command: [notary], concurrency: 0}\n\
                   btc:\n  b: {rpcUrl: 'http://n/', concurrency: many}\n";
        let e = parse_str(bad, &ctx(&[])).expect_err("invalid");
        let shown: Vec<String> = e.0.iter().map(ToString::to_string).collect();
        assert!(shown.iter().any(|l| l == "anchors.yaml: exec.e.concurrency: must be 1 to 4096"), "{shown:#?}");
        assert!(shown.iter().any(|l| l.starts_with("anchors.yaml: btc.b.concurrency: ")), "{shown:#?}");
    }
}
