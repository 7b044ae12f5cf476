//! `sluice login` (check a key, then save it) and `sluice whoami`.

use super::Ctx;
use crate::cli::{LoginArgs, OutputMode};
use crate::config::{self, Config};
use crate::http::Client;
use crate::output::{field, print_json, print_out};
use anyhow::Result;
use serde_json::{Value, json};

pub async fn login(a: LoginArgs) -> Result<()> {
    let path = config::resolve_path(a.common.config.as_deref(), a.common.home.as_deref())?;
    let client = Client::new(&a.url, &a.key)?;
    // Checking first means a typo never gets saved as the default login.
    let who = client.get_json("/api/v1/whoami").await?;
    config::write(
        &path,
        &Config {
            url: client.base().to_string(),
            key: a.key.clone(),
        },
    )?;
    if a.common.output == OutputMode::Json {
        return print_json(&json!({ "url": client.base(), "config": path, "whoami": who }));
    }
    print_out(&format!(
        "Logged in to {} as {}.\nSaved to {} (readable only by you).\n",
        client.base(),
        describe(&who),
        path.display()
    ))
}

pub async fn whoami(ctx: Ctx) -> Result<()> {
    let who = ctx.client.get_json("/api/v1/whoami").await?;
    if ctx.json() {
        return print_json(&who);
    }
    print_out(&format!(
        "{}\nserver: {}\nkey prefix: {}\n",
        describe(&who),
        ctx.client.base(),
        field(&who, "prefix")
    ))
}

/// "'alice' (editor in workspace sales)" or "'root' (admin)".
fn describe(who: &Value) -> String {
    let name = field(who, "name");
    let role = field(who, "role");
    match who.get("workspace").and_then(Value::as_str) {
        Some(ws) => format!("'{name}' ({role} in workspace {ws})"),
        None => format!("'{name}' ({role})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_workspace_keys_and_admin_keys() {
        assert_eq!(
            describe(&json!({"name": "alice", "role": "editor", "workspace": "sales"})),
            "'alice' (editor in workspace sales)"
        );
        assert_eq!(
            describe(&json!({"name": "root", "role": "admin", "workspace": null})),
            "'root' (admin)"
        );
    }
}
