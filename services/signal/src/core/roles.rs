//! What each role may do (ROLE_DENY): a table of actions denied to roles, empty by
//! default (everyone may do everything, as the servers we replace allowed). Actions
//! are signal kinds (`offer`, `answer`, `candidate`, or any other), `broadcast` and
//! `update`. Example: `ROLE_DENY=observer:offer,answer,candidate,broadcast` lets
//! observers receive but not send offers or chat.

use std::collections::{HashMap, HashSet};

use protocol::Role;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleRules {
    denied: HashMap<String, HashSet<String>>,
}

impl RoleRules {
    /// Parses `role:action,action;role:action`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut denied: HashMap<String, HashSet<String>> = HashMap::new();
        for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (role, actions) =
                entry.split_once(':').ok_or_else(|| format!("{entry:?}: expected role:action,action"))?;
            let role = Role::parse(role.trim()).map_err(|e| format!("{entry:?}: {e}"))?;
            let actions: HashSet<String> =
                actions.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect();
            if actions.is_empty() {
                return Err(format!("{entry:?}: no actions"));
            }
            denied.entry(role.as_str().to_owned()).or_default().extend(actions);
        }
        Ok(Self { denied })
    }

    pub fn is_empty(&self) -> bool {
        self.denied.is_empty()
    }

    pub fn allows(&self, role: &Role, action: &str) -> bool {
        self.denied.get(role.as_str()).is_none_or(|denied| !denied.contains(action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_actions_are_per_role_and_everything_else_is_allowed() {
        let rules = RoleRules::parse("observer: offer, answer ,candidate; guest:broadcast").unwrap();
        let (observer, guest, host) =
            (Role::parse("observer").unwrap(), Role::parse("guest").unwrap(), Role::parse("host").unwrap());
        assert!(!rules.allows(&observer, "offer") && !rules.allows(&observer, "candidate"));
        assert!(rules.allows(&observer, "broadcast"));
        assert!(!rules.allows(&guest, "broadcast") && rules.allows(&guest, "offer"));
        assert!(rules.allows(&host, "offer"));
        assert!(RoleRules::parse("").unwrap().is_empty());
        for bad in ["observer", "observer:", "bad role!:offer"] {
            assert!(RoleRules::parse(bad).is_err(), "{bad}");
        }
    }
}
