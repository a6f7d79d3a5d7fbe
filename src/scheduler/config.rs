//! The configuration the scheduler runs: the namespaces file checked against the targets
//! file. Reading the files and the namespaces file's schema are `config`'s, each target's
//! section is its driver's (`anchor`); this is where the two meet.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::anchor::targets::TargetsConfig;
use crate::config::namespaces::{self, NamespaceConfig, ParseCache};
use crate::config::{ConfigErrors, FileSnapshot, LoadContext, read_snapshot};

/// A complete, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Validated namespaces by name.
    pub namespaces: BTreeMap<Arc<str>, Arc<NamespaceConfig>>,
    /// Validated targets.
    pub targets: Arc<TargetsConfig>,
    /// SHA-256 of the namespaces file, as shown in /health and `vmsh_config_info`.
    pub hash: String,
    /// SHA-256 of the targets file, when there is one.
    pub targets_hash: Option<String>,
}

/// Validates snapshots of the namespaces file and (optionally) the targets file.
pub fn build(
    namespaces: &FileSnapshot,
    targets: Option<&FileSnapshot>,
    ctx: &LoadContext,
) -> Result<Config, ConfigErrors> {
    build_with(namespaces, targets, ctx, None)
}

/// [`build`], parsing only the namespaces whose text changed since the load that filled
/// `cache` (see [`namespaces::parse_reusing`]); the result and the errors are [`build`]'s.
pub fn build_reusing(
    namespaces: &FileSnapshot,
    targets: Option<&FileSnapshot>,
    ctx: &LoadContext,
    cache: &mut ParseCache,
) -> Result<Config, ConfigErrors> {
    build_with(namespaces, targets, ctx, Some(cache))
}

fn build_with(
    namespaces: &FileSnapshot,
    targets: Option<&FileSnapshot>,
    ctx: &LoadContext,
    cache: Option<&mut ParseCache>,
) -> Result<Config, ConfigErrors> {
    let targets_config = match targets {
        Some(t) => TargetsConfig::parse(&t.bytes, &t.path, ctx)?,
        None => TargetsConfig::default(),
    };
    let targets_hash = targets.map(|t| t.hash.clone());
    let (bytes, path) = (&namespaces.bytes, &namespaces.path);
    let parsed = match cache {
        Some(cache) => namespaces::parse_reusing(bytes, path, &targets_config, targets_hash.as_deref(), cache)?,
        None => namespaces::parse(bytes, path, &targets_config)?,
    };
    Ok(Config { namespaces: parsed, targets: Arc::new(targets_config), hash: namespaces.hash.clone(), targets_hash })
}

/// Reads and validates the config files from disk.
pub fn load(namespaces_path: &Path, targets_path: Option<&Path>, ctx: &LoadContext) -> Result<Config, ConfigErrors> {
    load_with(namespaces_path, targets_path, ctx, None)
}

/// [`load`], filling `cache` for the reloads to come (see [`build_reusing`]).
pub fn load_reusing(
    namespaces_path: &Path,
    targets_path: Option<&Path>,
    ctx: &LoadContext,
    cache: &mut ParseCache,
) -> Result<Config, ConfigErrors> {
    load_with(namespaces_path, targets_path, ctx, Some(cache))
}

fn load_with(
    namespaces_path: &Path,
    targets_path: Option<&Path>,
    ctx: &LoadContext,
    cache: Option<&mut ParseCache>,
) -> Result<Config, ConfigErrors> {
    let ns = read_snapshot(namespaces_path)?;
    let targets = targets_path.map(read_snapshot).transpose()?;
    build_with(&ns, targets.as_ref(), ctx, cache)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::ConfigError;
    use crate::config::namespaces::{parse, parse_reusing};
    use crate::config::vars::Vars;
    use crate::model::CadenceKind;

    const REFERENCE: &str = include_str!("../../tests/fixtures/namespaces.vm-spawn.yaml");

    /// A valid file that splits into pieces, to warm a cache with.
    const VALID_PIECES: &str =
        "namespaces:\n  first:\n    cadence:\n      fast: {target: \"local:shared\", every: \"89s\"}\n";

    /// Errors of a namespaces file checked against an empty targets file.
    fn errors(yaml: &str) -> Vec<ConfigError> {
        match parse(yaml.as_bytes(), Path::new("ns.yaml"), &TargetsConfig::default()) {
            Ok(_) => panic!("expected errors for:\n{yaml}"),
            Err(e) => e.0,
        }
    }

    fn has(errs: &[ConfigError], ns: Option<&str>, field: &str, reason_part: &str) -> bool {
        errs.iter().any(|e| e.namespace.as_deref() == ns && e.field == field && e.reason.contains(reason_part))
    }

    /// The reference targets file with its variables set (an empty chain id: each target's
    /// own), and its trust bundle in place under a temporary root.
    fn reference_targets() -> (tempfile::TempDir, TargetsConfig) {
        let root = tempfile::tempdir().expect("tempdir");
        let bundle = root.path().join("services/anchors/certs/tsa-bundle.pem");
        std::fs::create_dir_all(bundle.parent().expect("parent")).expect("mkdir");
        std::fs::write(&bundle, include_str!("../anchor/rfc3161/testdata/ca.pem")).expect("bundle");
        let vars = [
            ("EVM_RPC", "http://127.0.0.1:8545"),
            ("EVM_CHAIN_ID", ""),
            ("EVM_CONTRACT", ""),
            ("EVM_ANCHOR_KEY", "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"),
            ("BTC_RPC", "http://u:p@127.0.0.1:18443"),
            ("TSA_URL", "http://127.0.0.1:3180"),
        ];
        let ctx = LoadContext {
            vars: Vars::new(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))),
            root: root.path().to_path_buf(),
        };
        let text = include_str!("../../tests/fixtures/anchors.vm-spawn.yaml");
        let targets = TargetsConfig::parse(text.as_bytes(), Path::new("anchors.yaml"), &ctx).expect("valid");
        (root, targets)
    }

    #[test]
    fn the_reference_deployment_file_is_accepted_as_it_is() {
        let (_root, targets) = reference_targets();
        let ns = parse(REFERENCE.as_bytes(), Path::new("ns.yaml"), &targets).expect("reference file is valid");
        assert_eq!(ns.len(), 2);
        let dao = &ns["dao:vaultmesh"].cadences;
        assert_eq!(dao[&CadenceKind::Fast].period, Duration::from_secs(89));
        assert_eq!(dao[&CadenceKind::Fast].confirmations, Some(3));
        assert_eq!(dao[&CadenceKind::Strong].period, Duration::from_secs(34 * 89));
        assert_eq!(dao[&CadenceKind::Strong].target.to_string(), "btc:mainnet");
        assert_eq!(dao[&CadenceKind::Cold].period, Duration::from_secs(86_400));
        assert_eq!(dao[&CadenceKind::Cold].policy_oid, None, "an empty policyOID means the TSA default");
        let fin = &ns["fin:clearing"].cadences;
        assert_eq!(fin[&CadenceKind::Strong].period, Duration::from_secs(17 * 120));
        assert_eq!(fin[&CadenceKind::Cold].period, Duration::from_secs(12 * 3_600));
    }

    #[test]
    fn the_reference_file_needs_its_targets_configured() {
        let errs = errors(REFERENCE);
        assert!(has(&errs, Some("dao:vaultmesh"), "cadence.fast.target", "eip155:8453 is not configured"), "{errs:#?}");
        assert!(has(&errs, Some("fin:clearing"), "cadence.cold.target", "rfc3161:tsa is not configured"), "{errs:#?}");
    }

    #[test]
    fn exec_targets_must_be_configured() {
        let errs = errors("namespaces:\n  a: {cadence: {fast: {target: 'exec:nope', every: '1s'}}}\n");
        assert!(has(&errs, Some("a"), "cadence.fast.target", "not configured"), "{errs:#?}");
    }

    #[test]
    fn policy_oid_must_be_an_oid_and_only_for_rfc3161() {
        let errs =
            errors("namespaces:\n  a: {cadence: {fast: {target: 'rfc3161:tsa', every: '1s', policyOID: 'abc'}}}\n");
        assert!(has(&errs, Some("a"), "cadence.fast.policyOID", "object identifier"), "{errs:#?}");
        let errs =
            errors("namespaces:\n  a: {cadence: {fast: {target: 'local:j', every: '1s', policyOID: '1.2.3'}}}\n");
        assert!(has(&errs, Some("a"), "cadence.fast.policyOID", "only to rfc3161"), "{errs:#?}");
        let (_root, targets) = reference_targets();
        let valid = "namespaces:\n  a: {cadence: {fast: {target: 'rfc3161:tsa', every: '1s', policyOID: '1.3.6.1.4.1.4146.2.3'}}}\n";
        parse(valid.as_bytes(), Path::new("ns.yaml"), &targets).expect("valid OID");
    }

    #[test]
    fn every_corpus_file_parses_or_fails_with_errors_naming_the_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus/namespaces");
        let mut files: Vec<_> = std::fs::read_dir(&dir).expect("corpus").map(|e| e.expect("entry").path()).collect();
        files.sort();
        assert!(files.len() >= 12, "{} corpus files", files.len());
        let (_root, targets) = reference_targets();
        for path in files {
            let bytes = std::fs::read(&path).expect("read");
            let name = path.file_name().and_then(|n| n.to_str()).expect("name").to_string();
            // Reusing a load, cold or warm, gives exactly what a whole parse gives.
            let mut cache = ParseCache::default();
            for _ in 0..2 {
                let reused = parse_reusing(&bytes, &path, &targets, None, &mut cache);
                assert_eq!(reused, parse(&bytes, &path, &targets), "{name}");
            }
            let mut warm = ParseCache::default();
            parse_reusing(VALID_PIECES.as_bytes(), &path, &targets, None, &mut warm).expect("valid");
            assert_eq!(
                parse_reusing(&bytes, &path, &targets, None, &mut warm),
                parse(&bytes, &path, &targets),
                "{name}"
            );
            match parse(&bytes, &path, &targets) {
                Ok(ns) => assert!(name.starts_with("valid-") && !ns.is_empty(), "{name} parsed"),
                Err(errs) => {
                    assert!(name.starts_with("invalid-"), "{name}: {errs}");
                    for e in errs.0 {
                        assert_eq!(e.file, path);
                        assert!(!e.reason.is_empty() && !e.to_string().contains('\n'), "{name}: {e}");
                    }
                }
            }
        }
    }
}
