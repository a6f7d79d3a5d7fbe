//! The admin API: operators pause, resume, trigger and skip a namespace's cadences, with
//! bearer tokens from `VMSH_ADMIN_TOKEN_FILE` (read by [`crate::config::tokens`]; see
//! docs/ADMIN.md).

pub(crate) mod api;
