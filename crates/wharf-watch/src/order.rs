//! Dependency order between containers: docker links, a shared network namespace
//! (`network_mode: container:X`), watchtower's depends-on label and compose's depends_on
//! label. Dependencies are updated first; a container's dependants
//! are stopped before it and started after it.

use std::collections::{HashMap, HashSet};

use crate::spec;
use crate::target::Target;

/// Who depends on whom, by container name.
pub struct Dependencies {
    /// name → the names it depends on.
    on: HashMap<String, Vec<String>>,
}

impl Dependencies {
    pub fn of(containers: &[Target]) -> Dependencies {
        let compose: HashMap<(String, String), Vec<String>> =
            containers.iter().fold(HashMap::new(), |mut map, t| {
                if let Some((project, service)) = t.labels().compose_service() {
                    map.entry((project.to_owned(), service.to_owned()))
                        .or_default()
                        .push(t.name.clone());
                }
                map
            });
        let names_by_id: HashMap<&str, &str> = containers
            .iter()
            .map(|t| (t.id.as_str(), t.name.as_str()))
            .collect();
        let on = containers
            .iter()
            .map(|t| (t.name.clone(), direct(t, &compose, &names_by_id)))
            .collect();
        Dependencies { on }
    }

    /// `names` reordered so every container comes after what it depends on; a cycle keeps
    /// the given order for its members.
    pub fn sorted(&self, names: &[String]) -> Vec<String> {
        let mut done: HashSet<&str> = HashSet::new();
        let mut out = Vec::new();
        for name in names {
            self.visit(name, names, &mut done, &mut Vec::new(), &mut out);
        }
        out
    }

    fn visit<'a>(
        &'a self,
        name: &'a str,
        wanted: &[String],
        done: &mut HashSet<&'a str>,
        path: &mut Vec<&'a str>,
        out: &mut Vec<String>,
    ) {
        if done.contains(name) || path.contains(&name) {
            return;
        }
        path.push(name);
        for dep in self.on.get(name).into_iter().flatten() {
            self.visit(dep, wanted, done, path, out);
        }
        path.pop();
        done.insert(name);
        if wanted.iter().any(|w| w == name) {
            out.push(name.to_owned());
        }
    }

    /// Everything that depends on `name`, directly or not, dependencies first.
    pub fn dependants(&self, name: &str) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        let mut queue = vec![name.to_owned()];
        while let Some(current) = queue.pop() {
            for (other, deps) in &self.on {
                if deps.contains(&current) && other != name && !found.contains(other) {
                    found.push(other.clone());
                    queue.push(other.clone());
                }
            }
        }
        self.sorted(&found)
    }
}

fn direct(
    t: &Target,
    compose: &HashMap<(String, String), Vec<String>>,
    names_by_id: &HashMap<&str, &str>,
) -> Vec<String> {
    let labels = t.labels();
    let mut deps = labels.depends_on();
    let links = t
        .inspect
        .host_config
        .as_ref()
        .and_then(|h| h.links.clone())
        .unwrap_or_default();
    // Inspect shows links as `/db:/web/db`: the first part is the linked container.
    deps.extend(links.iter().filter_map(|l| {
        l.split(':')
            .next()
            .map(|n| n.trim_start_matches('/').to_owned())
    }));
    if let Some(provider) = spec::network_provider(&t.inspect) {
        let name = names_by_id.get(provider).copied().unwrap_or(provider);
        deps.push(name.to_owned());
    }
    if let Some((project, _)) = labels.compose_service() {
        for service in labels.compose_depends_on() {
            if let Some(names) = compose.get(&(project.to_owned(), service)) {
                deps.extend(names.iter().cloned());
            }
        }
    }
    deps.retain(|d| d != &t.name);
    deps.dedup();
    deps
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerConfig, ContainerInspectResponse, HostConfig};

    fn target(name: &str, labels: &[(&str, &str)], links: &[&str]) -> Target {
        Target {
            id: name.into(),
            name: name.into(),
            was_running: true,
            inspect: ContainerInspectResponse {
                config: Some(ContainerConfig {
                    labels: Some(
                        labels
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    ),
                    ..Default::default()
                }),
                host_config: Some(HostConfig {
                    links: Some(links.iter().map(|s| s.to_string()).collect()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }

    #[test]
    fn links_labels_and_compose_order_dependencies_first() {
        use crate::labels::*;
        let all = vec![
            target("web", &[(DEPENDS_ON, "api")], &[]),
            target("api", &[], &["/db:/api/db"]),
            target(
                "worker",
                &[
                    (COMPOSE_PROJECT, "p"),
                    (COMPOSE_SERVICE, "worker"),
                    (COMPOSE_DEPENDS_ON, "cache:service_started:false"),
                ],
                &[],
            ),
            target(
                "p-cache-1",
                &[(COMPOSE_PROJECT, "p"), (COMPOSE_SERVICE, "cache")],
                &[],
            ),
            target("db", &[], &[]),
        ];
        let deps = Dependencies::of(&all);
        let names: Vec<String> = all.iter().map(|t| t.name.clone()).collect();
        let sorted = deps.sorted(&names);
        let pos = |n: &str| sorted.iter().position(|s| s == n).unwrap();
        assert!(pos("db") < pos("api") && pos("api") < pos("web"));
        assert!(pos("p-cache-1") < pos("worker"));
        assert_eq!(deps.dependants("db"), vec!["api", "web"]);
        assert_eq!(deps.dependants("p-cache-1"), vec!["worker"]);
    }

    #[test]
    fn sharing_a_network_is_depending_on_its_owner_by_id_or_name() {
        let mut vpn = target("vpn", &[], &[]);
        vpn.id = "0123abcd".into();
        let mut by_id = target("client", &[], &[]);
        by_id.inspect.host_config.as_mut().unwrap().network_mode =
            Some("container:0123abcd".into());
        let mut by_name = target("other", &[], &[]);
        by_name.inspect.host_config.as_mut().unwrap().network_mode = Some("container:vpn".into());
        let deps = Dependencies::of(&[by_id, by_name, vpn]);
        let mut dependants = deps.dependants("vpn");
        dependants.sort();
        assert_eq!(dependants, ["client", "other"]);
    }

    #[test]
    fn a_cycle_does_not_hang_or_drop_containers() {
        use crate::labels::DEPENDS_ON;
        let all = vec![
            target("a", &[(DEPENDS_ON, "b")], &[]),
            target("b", &[(DEPENDS_ON, "a")], &[]),
        ];
        let deps = Dependencies::of(&all);
        assert_eq!(deps.sorted(&["a".into(), "b".into()]).len(), 2);
    }
}
