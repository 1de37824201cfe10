//! registry:2's `REGISTRY_*` variables, applied over the file's tree before it is read.

use serde_norway::{Mapping, Value};

/// registry:2's mapping: `REGISTRY_A_B_C=v` sets `a.b.c: v`. Setting a value on `auth` or
/// `storage` themselves picks the driver (`REGISTRY_AUTH=htpasswd` → `auth: {htpasswd: {}}`).
/// Returns the variables applied with the dotted key each set.
pub(super) fn apply_env(
    tree: &mut Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut applied = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("REGISTRY_"))
        .collect();
    vars.sort(); // parents (REGISTRY_AUTH) before children (REGISTRY_AUTH_HTPASSWD_PATH)
    for (key, value) in vars {
        let path: Vec<String> = key["REGISTRY_".len()..]
            .split('_')
            .map(str::to_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            continue;
        }
        let is_driver = path.len() == 1 && matches!(path[0].as_str(), "auth" | "storage");
        let leaf = if is_driver {
            let mut m = Mapping::new();
            m.insert(
                Value::String(value.to_lowercase()),
                Value::Mapping(Mapping::new()),
            );
            Value::Mapping(m)
        } else if takes_yaml(&path) {
            // registry:2 unmarshals a variable's value as YAML into the field it names:
            // that is how a list such as notifications.endpoints comes from the environment.
            serde_norway::from_str(&value).unwrap_or(Value::String(value))
        } else {
            Value::String(value)
        };
        set_path(tree, &path, leaf);
        applied.push((key, path.join(".")));
    }
    applied
}

/// Keys whose values are lists or maps, which a variable can only give as YAML text.
fn takes_yaml(path: &[String]) -> bool {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    matches!(
        p.as_slice(),
        ["notifications", "endpoints"]
            | ["notifications"]
            | ["immutable"]
            | ["quotas"]
            | ["retention", "rules"]
    )
}

fn set_path(tree: &mut Value, path: &[String], leaf: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if !tree.is_mapping() {
        *tree = Value::Mapping(Mapping::new());
    }
    let map = tree.as_mapping_mut().expect("mapping");
    let key = Value::String(first.clone());
    if rest.is_empty() {
        match (map.get_mut(&key), leaf) {
            // A driver choice merges with settings the file already has for it.
            (Some(Value::Mapping(existing)), Value::Mapping(new)) => {
                for (k, v) in new {
                    existing.entry(k).or_insert(v);
                }
            }
            (_, leaf) => {
                map.insert(key, leaf);
            }
        }
    } else {
        let child = map.entry(key).or_insert(Value::Mapping(Mapping::new()));
        set_path(child, rest, leaf);
    }
}
