//! The command line: `vmsh-scheduler [run]` and `vmsh-scheduler validate [FILE]`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    /// Working root (VMSH_ROOT).
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
}

impl Cli {
    /// The flags that override environment settings.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            root: self.root.clone(),
            namespaces: self.namespaces.clone(),
            anchors: self.anchors.clone(),
            state: self.state.clone(),
            port: self.port,
            bind: self.bind,
            log_level: self.log_level.clone(),
            log_format: self.log_format.clone(),
        }
    }
}
