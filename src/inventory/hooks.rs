//! `[[hook]]`: the operator's own commands, run as root on hosts before and after kbs changes
//! them (as k0sctl has them): draining a local service before an upgrade, a site's audit script
//! after an apply. A failing hook stops the run with its name.

use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use super::error::Reporter;
use super::raw::RawInventory;
use super::{Host, Role};

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookPoint {
    /// After preflight, before `kbs apply` or `kbs add-node` changes anything.
    BeforeApply,
    /// After the cluster is verified.
    AfterApply,
    /// Before `kbs upgrade` changes anything.
    BeforeUpgrade,
    AfterUpgrade,
    /// Before `kbs reset` tears a host down.
    BeforeReset,
    AfterReset,
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BeforeApply => "before-apply",
            Self::AfterApply => "after-apply",
            Self::BeforeUpgrade => "before-upgrade",
            Self::AfterUpgrade => "after-upgrade",
            Self::BeforeReset => "before-reset",
            Self::AfterReset => "after-reset",
        })
    }
}

/// One hook: a shell script run as root on every host it selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub name: String,
    pub when: HookPoint,
    pub run: String,
    /// Only hosts with one of these roles; every host when empty.
    pub roles: Vec<Role>,
    /// Only these hosts; every host when empty.
    pub hosts: Vec<String>,
}

impl Hook {
    /// Whether the hook runs on `host`.
    pub fn selects(&self, host: &str, roles: &[Role]) -> bool {
        (self.hosts.is_empty() || self.hosts.iter().any(|h| h == host))
            && (self.roles.is_empty() || self.roles.iter().any(|r| roles.contains(r)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    pub name: Spanned<String>,
    pub when: Spanned<HookPoint>,
    pub run: Spanned<String>,
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
}

pub(super) fn hooks(r: &mut Reporter, raw: &RawInventory, hosts: &[Option<Host>]) -> Vec<Hook> {
    let mut out: Vec<Hook> = Vec::new();
    for h in &raw.hooks {
        let name = h.name.get_ref().trim();
        let ok_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok_name {
            r.error(
                h.name.span(),
                format!("hook.name `{name}` is not a name"),
                "letters, digits, `-`, `_`, `.`",
                "name the hook so a failure can say which one, e.g. \"drain-local-queue\"",
            );
            continue;
        }
        let when = *h.when.get_ref();
        if out.iter().any(|o| o.name == name && o.when == when) {
            r.error(
                h.name.span(),
                format!("two {when} hooks are named `{name}`"),
                "duplicate",
                "give each hook its own name",
            );
        }
        if h.run.get_ref().trim().is_empty() {
            r.error(
                h.run.span(),
                format!("hook `{name}` has nothing to run"),
                "empty",
                "give the shell commands to run as root on each host, e.g. run = \"systemctl stop my-app\"",
            );
        }
        for host in &h.hosts {
            let known = hosts.iter().flatten().any(|k| &k.name == host.get_ref());
            if !known {
                r.error(
                    host.span(),
                    format!(
                        "hook `{name}` names host `{}`, which is not in the inventory",
                        host.get_ref()
                    ),
                    "no such host",
                    "use the name of a [[host]] entry",
                );
            }
        }
        out.push(Hook {
            name: name.to_string(),
            when,
            run: h.run.get_ref().clone(),
            roles: h.roles.clone(),
            hosts: h.hosts.iter().map(|s| s.get_ref().clone()).collect(),
        });
    }
    out
}
