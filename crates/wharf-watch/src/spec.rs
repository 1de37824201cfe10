//! The replacement container's configuration: the old container's, with what came from
//! the old image taken out so the new image's defaults apply (watchtower's rule), and a
//! check that what the engine created is the old container again on a new image.

use std::collections::{HashMap, HashSet};

use bollard::models::{
    ContainerConfig, ContainerCreateBody, ContainerInspectResponse, EndpointSettings, ImageConfig,
    NetworkingConfig,
};

/// The API version from which a container can be created on several networks at once.
const MULTI_NETWORK_CREATE: (usize, usize) = (1, 44);

/// What to create, and the networks to connect after creating on engines too old to take
/// them all at create time.
pub struct Replacement {
    pub body: ContainerCreateBody,
    pub connect_later: Vec<(String, EndpointSettings)>,
}

/// The configuration for a container like `old`, started from `image`. `old_image` is the
/// configuration of the image `old` was created from. `keep_volumes`: mount the old
/// container's anonymous volumes (off with `--remove-volumes`, which wants them fresh).
pub fn replacement(
    old: &ContainerInspectResponse,
    old_image: &ImageConfig,
    image: &str,
    api: (usize, usize),
    keep_volumes: bool,
) -> Replacement {
    let config = old.config.clone().unwrap_or_default();
    let short_id: String = old.id.as_deref().unwrap_or("").chars().take(12).collect();
    let mut host_config = old.host_config.clone().unwrap_or_default();
    if keep_volumes {
        keep_anonymous_volumes(old, &mut host_config);
    }
    let (networking_config, connect_later) = networks(old, &short_id, api);
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        hostname: config
            .hostname
            .clone()
            .filter(|h| *h != short_id && !shares_network(old)),
        domainname: config.domainname.clone(),
        user: differs(&config.user, &old_image.user),
        working_dir: differs(&config.working_dir, &old_image.working_dir),
        env: subtract_list(&config.env, &old_image.env),
        labels: subtract_map(&config.labels, &old_image.labels),
        volumes: subtract_list(&config.volumes, &old_image.volumes),
        exposed_ports: exposed_ports(&config, old_image, old),
        healthcheck: differs(&config.healthcheck, &old_image.healthcheck),
        stop_signal: differs(&config.stop_signal, &old_image.stop_signal),
        stop_timeout: config.stop_timeout,
        tty: config.tty,
        open_stdin: config.open_stdin,
        stdin_once: config.stdin_once,
        attach_stdin: config.attach_stdin,
        attach_stdout: config.attach_stdout,
        attach_stderr: config.attach_stderr,
        shell: differs(&config.shell, &old_image.shell),
        host_config: Some(host_config),
        networking_config,
        ..command(&config, old_image)
    };
    Replacement {
        body,
        connect_later,
    }
}

/// Entrypoint and cmd: an entrypoint set on the container resets the image's cmd (docker's
/// rule), so cmd is dropped only when both are the image's.
fn command(config: &ContainerConfig, image: &ImageConfig) -> ContainerCreateBody {
    if config.entrypoint == image.entrypoint {
        ContainerCreateBody {
            entrypoint: None,
            cmd: differs(&config.cmd, &image.cmd),
            ..Default::default()
        }
    } else {
        ContainerCreateBody {
            entrypoint: config.entrypoint.clone(),
            cmd: config.cmd.clone(),
            ..Default::default()
        }
    }
}

fn differs<T: PartialEq + Clone>(value: &Option<T>, image: &Option<T>) -> Option<T> {
    if value == image {
        None
    } else {
        value.clone()
    }
}

fn subtract_list(values: &Option<Vec<String>>, image: &Option<Vec<String>>) -> Option<Vec<String>> {
    let image: HashSet<&String> = image.iter().flatten().collect();
    values
        .as_ref()
        .map(|v| v.iter().filter(|x| !image.contains(x)).cloned().collect())
}

fn subtract_map(
    values: &Option<HashMap<String, String>>,
    image: &Option<HashMap<String, String>>,
) -> Option<HashMap<String, String>> {
    let empty = HashMap::new();
    let image = image.as_ref().unwrap_or(&empty);
    values.as_ref().map(|v| {
        v.iter()
            .filter(|(k, val)| image.get(*k) != Some(val))
            .map(|(k, val)| (k.clone(), val.clone()))
            .collect()
    })
}

/// Ports the container exposes beyond its image, plus every published port (watchtower's
/// rule: a binding needs its port exposed).
fn exposed_ports(
    config: &ContainerConfig,
    image: &ImageConfig,
    old: &ContainerInspectResponse,
) -> Option<Vec<String>> {
    let mut ports = subtract_list(&config.exposed_ports, &image.exposed_ports).unwrap_or_default();
    let bound = old
        .host_config
        .as_ref()
        .and_then(|h| h.port_bindings.as_ref())
        .map(|b| b.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    for port in bound {
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    (!ports.is_empty()).then_some(ports)
}

fn shares_network(old: &ContainerInspectResponse) -> bool {
    network_provider(old).is_some()
}

/// The container whose network `c` shares (`network_mode: container:X`), by the name or
/// id it was given; the engine records an id.
pub fn network_provider(c: &ContainerInspectResponse) -> Option<&str> {
    c.host_config
        .as_ref()
        .and_then(|h| h.network_mode.as_deref())
        .and_then(|m| m.strip_prefix("container:"))
}

/// Anonymous volumes (an image's `VOLUME` without a `-v`) would be new and empty in the
/// replacement; mount the old ones by name instead, so no data is left behind.
fn keep_anonymous_volumes(old: &ContainerInspectResponse, host: &mut bollard::models::HostConfig) {
    let mut taken: HashSet<String> = host
        .binds
        .iter()
        .flatten()
        .filter_map(|b| b.split(':').nth(1).map(str::to_owned))
        .collect();
    taken.extend(
        host.mounts
            .iter()
            .flatten()
            .filter_map(|m| m.target.clone()),
    );
    for mount in old.mounts.iter().flatten() {
        let (Some("volume"), Some(name), Some(dest)) = (
            mount.typ.as_deref(),
            mount.name.as_deref(),
            mount.destination.as_deref(),
        ) else {
            continue;
        };
        if taken.contains(dest) {
            continue;
        }
        let mode = if mount.rw == Some(false) { ":ro" } else { "" };
        host.binds
            .get_or_insert_with(Vec::new)
            .push(format!("{name}:{dest}{mode}"));
        taken.insert(dest.to_owned());
    }
}

/// Every network with its aliases, static addresses, MAC address and links. Engines
/// before API 1.44 take one network at create; the rest are connected afterwards.
fn networks(
    old: &ContainerInspectResponse,
    short_id: &str,
    api: (usize, usize),
) -> (Option<NetworkingConfig>, Vec<(String, EndpointSettings)>) {
    let mut endpoints: Vec<(String, EndpointSettings)> = old
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(name, e)| (name, endpoint(e, short_id)))
        .collect();
    if endpoints.is_empty() || shares_network(old) {
        return (None, Vec::new());
    }
    // The network mode's network first: it is the one an old engine gets at create.
    let mode = old
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.clone())
        .unwrap_or_default();
    endpoints.sort_by_key(|(name, _)| {
        (
            name != &mode && !(mode == "default" && name == "bridge"),
            name.clone(),
        )
    });
    let later = if api >= MULTI_NETWORK_CREATE {
        Vec::new()
    } else {
        endpoints.split_off(1)
    };
    let config = NetworkingConfig {
        endpoints_config: Some(endpoints.into_iter().collect()),
    };
    (Some(config), later)
}

/// What a user can configure on an endpoint; the engine's runtime state is left out.
fn endpoint(e: EndpointSettings, short_id: &str) -> EndpointSettings {
    let aliases = e.aliases.map(|a| {
        a.into_iter()
            .filter(|alias| alias != short_id)
            .collect::<Vec<_>>()
    });
    EndpointSettings {
        ipam_config: e.ipam_config,
        links: e.links,
        aliases: aliases.filter(|a| !a.is_empty()),
        mac_address: e.mac_address.filter(|m| !m.is_empty()),
        driver_opts: e.driver_opts,
        gw_priority: e.gw_priority,
        ..Default::default()
    }
}

/// The ways `new` differs from `old` in what the user configured, each named; empty
/// when the replacement is faithful. Image-provided values are excluded on both sides.
pub fn differences(
    old: &ContainerInspectResponse,
    old_image: &ImageConfig,
    new: &ContainerInspectResponse,
) -> Vec<String> {
    let mut out = Vec::new();
    let oc = old.config.clone().unwrap_or_default();
    let nc = new.config.clone().unwrap_or_default();
    let oh = old.host_config.clone().unwrap_or_default();
    let nh = new.host_config.clone().unwrap_or_default();
    let wanted_env = subtract_list(&oc.env, &old_image.env).unwrap_or_default();
    let have_env: HashSet<&String> = nc.env.iter().flatten().collect();
    for var in wanted_env.iter().filter(|v| !have_env.contains(v)) {
        let name = var.split('=').next().unwrap_or(var);
        out.push(format!("environment variable {name} is missing or changed"));
    }
    let wanted_labels = subtract_map(&oc.labels, &old_image.labels).unwrap_or_default();
    let have_labels = nc.labels.clone().unwrap_or_default();
    for (k, v) in &wanted_labels {
        if have_labels.get(k) != Some(v) {
            out.push(format!("label {k} is missing or changed"));
        }
    }
    if oc.entrypoint != old_image.entrypoint && oc.entrypoint != nc.entrypoint {
        out.push("entrypoint changed".into());
    }
    if (oc.entrypoint != old_image.entrypoint || oc.cmd != old_image.cmd) && oc.cmd != nc.cmd {
        out.push("command changed".into());
    }
    compare(
        &mut out,
        "user",
        &differs(&oc.user, &old_image.user),
        &nc.user,
        true,
    );
    compare(
        &mut out,
        "healthcheck",
        &differs(&oc.healthcheck, &old_image.healthcheck),
        &nc.healthcheck,
        true,
    );
    // Sharing another container's network, it gets that container's hostname at start.
    if !shares_network(old) {
        compare(
            &mut out,
            "hostname",
            &oc.hostname
                .clone()
                .filter(|h| !old.id.as_deref().unwrap_or("").starts_with(h.as_str())),
            &nc.hostname,
            true,
        );
    }
    host_differences(&mut out, &oh, &nh);
    compare_networks(&mut out, old, new);
    out
}

/// What the user configured on the host side: ports, limits, mounts, privileges.
fn host_differences(
    out: &mut Vec<String>,
    oh: &bollard::models::HostConfig,
    nh: &bollard::models::HostConfig,
) {
    compare(
        out,
        "port bindings",
        &oh.port_bindings,
        &nh.port_bindings,
        false,
    );
    compare(
        out,
        "restart policy",
        &oh.restart_policy,
        &nh.restart_policy,
        false,
    );
    compare(out, "memory limit", &oh.memory, &nh.memory, false);
    compare(out, "CPU limit", &oh.nano_cpus, &nh.nano_cpus, false);
    compare(out, "CPU shares", &oh.cpu_shares, &nh.cpu_shares, false);
    compare(
        out,
        "network mode",
        &oh.network_mode,
        &nh.network_mode,
        false,
    );
    compare(out, "mounts", &oh.mounts, &nh.mounts, false);
    compare(out, "capabilities", &oh.cap_add, &nh.cap_add, false);
    compare(out, "privileged", &oh.privileged, &nh.privileged, false);
    compare(
        out,
        "links",
        &oh.links.as_ref().map(|l| l.len()),
        &nh.links.as_ref().map(|l| l.len()),
        false,
    );
    let nb: HashSet<&String> = nh.binds.iter().flatten().collect();
    for bind in oh.binds.iter().flatten().filter(|b| !nb.contains(b)) {
        out.push(format!("bind mount {bind} is missing"));
    }
}

/// `set_only`: compare only when the old side is set (an unset value means "the new
/// image's default", which may differ).
fn compare<T: PartialEq>(
    out: &mut Vec<String>,
    what: &str,
    old: &Option<T>,
    new: &Option<T>,
    set_only: bool,
) {
    if set_only && old.is_none() {
        return;
    }
    if old != new {
        out.push(format!("{what} changed"));
    }
}

fn compare_networks(
    out: &mut Vec<String>,
    old: &ContainerInspectResponse,
    new: &ContainerInspectResponse,
) {
    let nets = |c: &ContainerInspectResponse| {
        c.network_settings
            .as_ref()
            .and_then(|n| n.networks.clone())
            .unwrap_or_default()
    };
    let (old_nets, new_nets) = (nets(old), nets(new));
    let old_short: String = old.id.as_deref().unwrap_or("").chars().take(12).collect();
    for (name, o) in &old_nets {
        let Some(n) = new_nets.get(name) else {
            out.push(format!("network {name} is missing"));
            continue;
        };
        let wanted: HashSet<&String> = o
            .aliases
            .iter()
            .flatten()
            .filter(|a| **a != old_short)
            .collect();
        let have: HashSet<&String> = n.aliases.iter().flatten().collect();
        if !wanted.is_subset(&have) {
            out.push(format!("aliases on network {name} changed"));
        }
        let ip = |e: &EndpointSettings| {
            e.ipam_config
                .as_ref()
                .and_then(|i| i.ipv4_address.clone())
                .filter(|a| !a.is_empty())
        };
        if ip(o).is_some() && ip(o) != ip(n) {
            out.push(format!("static IP on network {name} changed"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::HostConfig;

    fn env(vars: &[&str]) -> Option<Vec<String>> {
        Some(vars.iter().map(|s| s.to_string()).collect())
    }

    fn container(config: ContainerConfig) -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some("0123456789abcdef".into()),
            config: Some(config),
            host_config: Some(HostConfig::default()),
            ..Default::default()
        }
    }

    #[test]
    fn image_defaults_are_subtracted_and_user_settings_kept() {
        let image = ImageConfig {
            env: env(&["PATH=/bin", "VERSION=1"]),
            cmd: env(&["/app"]),
            working_dir: Some("/srv".into()),
            labels: Some([("org.version".to_string(), "1".to_string())].into()),
            ..Default::default()
        };
        let old = container(ContainerConfig {
            env: env(&["PATH=/bin", "VERSION=1", "MODE=prod"]),
            cmd: env(&["/app"]),
            working_dir: Some("/srv".into()),
            hostname: Some("0123456789ab".into()),
            labels: Some(
                [
                    ("org.version".to_string(), "1".to_string()),
                    ("team".to_string(), "a".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        });
        let r = replacement(&old, &image, "app:2", (1, 50), true);
        assert_eq!(r.body.env, env(&["MODE=prod"]));
        assert_eq!(
            r.body.cmd, None,
            "the image's cmd must come from the new image"
        );
        assert_eq!(r.body.working_dir, None);
        assert_eq!(
            r.body.hostname, None,
            "docker's default hostname is the old id"
        );
        assert_eq!(r.body.labels.unwrap().len(), 1);
        assert_eq!(r.body.image.as_deref(), Some("app:2"));
    }

    #[test]
    fn an_overridden_entrypoint_keeps_its_command() {
        let image = ImageConfig {
            entrypoint: env(&["/entry"]),
            cmd: env(&["run"]),
            ..Default::default()
        };
        let old = container(ContainerConfig {
            entrypoint: env(&["/bin/sh", "-c"]),
            cmd: env(&["run"]),
            ..Default::default()
        });
        let r = replacement(&old, &image, "x", (1, 50), true);
        assert_eq!(r.body.entrypoint, env(&["/bin/sh", "-c"]));
        assert_eq!(r.body.cmd, env(&["run"]));
    }

    #[test]
    fn a_container_on_another_ones_network_keeps_no_hostname_of_its_own() {
        let mut old = container(ContainerConfig {
            hostname: Some("db-host".into()),
            ..Default::default()
        });
        old.host_config.as_mut().unwrap().network_mode = Some("container:db".into());
        let r = replacement(&old, &ImageConfig::default(), "x", (1, 50), true);
        assert_eq!(r.body.hostname, None);
        let mut created = container(ContainerConfig::default());
        created.id = Some("fedcba9876543210".into());
        created.host_config = old.host_config.clone();
        assert!(
            differences(&old, &ImageConfig::default(), &created).is_empty(),
            "{:?}",
            differences(&old, &ImageConfig::default(), &created)
        );

        old.host_config.as_mut().unwrap().network_mode = None;
        created.host_config.as_mut().unwrap().network_mode = None;
        assert_eq!(
            differences(&old, &ImageConfig::default(), &created),
            vec!["hostname changed"]
        );
    }

    #[test]
    fn old_engines_get_extra_networks_after_create() {
        let mut old = container(ContainerConfig::default());
        old.host_config.as_mut().unwrap().network_mode = Some("front".into());
        let mut nets = HashMap::new();
        for name in ["front", "back"] {
            nets.insert(
                name.to_string(),
                EndpointSettings {
                    aliases: env(&["web", "0123456789ab"]),
                    ip_address: Some("10.0.0.5".into()),
                    ..Default::default()
                },
            );
        }
        old.network_settings = Some(bollard::models::NetworkSettings {
            networks: Some(nets),
            ..Default::default()
        });
        let r = replacement(&old, &ImageConfig::default(), "x", (1, 41), true);
        let created = r.body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(created.keys().collect::<Vec<_>>(), vec!["front"]);
        assert_eq!(created["front"].aliases, env(&["web"]));
        assert_eq!(
            created["front"].ip_address, None,
            "runtime state is not configuration"
        );
        assert_eq!(r.connect_later.len(), 1);
        assert_eq!(r.connect_later[0].0, "back");
    }
}
