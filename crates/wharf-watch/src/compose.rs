//! Keeping a docker-compose project's container the project's after wharf replaces it.
//!
//! Every `com.docker.compose.*` label is copied to the replacement (with the rest of the
//! configuration), so `docker-compose ps` lists it. But `docker-compose up -d` (1.29)
//! recreates a container whose `com.docker.compose.config-hash` label differs from the
//! service's hash, and that hash covers the *id of the image* the service's `image:` tag
//! names locally (`Service.config_dict`: options, image_id, links, net, ipc_mode,
//! networks, secrets, volumes_from). Once wharf moves the tag to the new image, the old
//! hash no longer matches, so `up -d` would recreate the container once more. The new
//! hash depends on the project's files, which only compose reads, so wharf asks compose:
//! `docker-compose -p P --project-directory D -f F… config --hash=SERVICE`, with the files
//! and directory the container's labels name, after the tag has moved. Compose v2 also
//! records the image in `com.docker.compose.image`, which is set to the new image.
//! Without a docker-compose binary or the files (a watcher in a container without the
//! project mounted), the old hash stays, with a warning: the next `up -d` then recreates
//! the container once, on the same new image.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::target::Target;

pub const CONFIG_HASH: &str = "com.docker.compose.config-hash";
pub const CONFIG_FILES: &str = "com.docker.compose.project.config_files";
pub const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
/// Compose v2's record of the image a container was created from.
pub const IMAGE: &str = "com.docker.compose.image";
pub const ENV_FILE: &str = "com.docker.compose.project.environment_file";

/// How long asking compose for a hash may take (it reads the files and inspects images).
const HASH_TIMEOUT: Duration = Duration::from_secs(60);

/// A compose project as its containers' labels describe it: enough to run compose on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Project {
    name: String,
    dir: PathBuf,
    files: Vec<PathBuf>,
    env_file: Option<PathBuf>,
}

impl Project {
    fn of(labels: &std::collections::HashMap<String, String>) -> Result<Project, String> {
        let name = labels
            .get(crate::labels::COMPOSE_PROJECT)
            .ok_or("not a compose container")?;
        let dir = labels
            .get(WORKING_DIR)
            .map(PathBuf::from)
            .ok_or_else(|| format!("no {WORKING_DIR} label"))?;
        let files = labels
            .get(CONFIG_FILES)
            .map(|f| f.split(',').map(|p| PathBuf::from(p.trim())).collect())
            .unwrap_or_default();
        Ok(Project {
            name: name.clone(),
            dir,
            files,
            env_file: labels.get(ENV_FILE).map(PathBuf::from),
        })
    }

    /// `docker-compose` with this project's name, directory, files and environment.
    fn command(
        &self,
        bin: &Path,
        docker_host: Option<&str>,
    ) -> Result<std::process::Command, String> {
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("--project-directory")
            .arg(&self.dir)
            .args(["-p", &self.name])
            .current_dir(&self.dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(env_file) = &self.env_file {
            cmd.arg("--env-file").arg(env_file);
        }
        for file in &self.files {
            if !file.exists() {
                return Err(format!(
                    "the compose file {} is not readable here",
                    file.display()
                ));
            }
            cmd.arg("-f").arg(file);
        }
        if let Some(host) = docker_host {
            cmd.env("DOCKER_HOST", host);
        }
        Ok(cmd)
    }
}

/// `target`, with its compose labels made to match `image_id`, ready to be replaced on it.
/// Not a compose container: unchanged.
pub async fn relabel(
    target: &Target,
    image_id: &str,
    compose: Option<&Path>,
    docker_host: Option<&str>,
) -> Target {
    let labels = target.labels();
    let Some(service) = labels.compose_service().map(|(_, s)| s.to_owned()) else {
        return target.clone();
    };
    let mut new = target.clone();
    let Some(map) = new.inspect.config.as_mut().and_then(|c| c.labels.as_mut()) else {
        return new;
    };
    if map.contains_key(IMAGE) {
        map.insert(IMAGE.to_owned(), image_id.to_owned());
    }
    if !map.contains_key(CONFIG_HASH) {
        return new;
    }
    let asked = match (compose, Project::of(map)) {
        (Some(bin), Ok(project)) => {
            let hash = format!("--hash={service}");
            match run(bin, &project, docker_host, &["config", &hash]).await {
                Ok(out) => parse_hash(&out, &service)
                    .ok_or_else(|| format!("config --hash printed no hash for {service}")),
                Err(e) => Err(e),
            }
        }
        (None, _) => Err("no docker-compose binary (--compose-bin)".to_owned()),
        (_, Err(e)) => Err(e),
    };
    match asked {
        Ok(hash) => {
            tracing::info!(container = %target.name, %service, %hash, "compose config hash for the new image");
            map.insert(CONFIG_HASH.to_owned(), hash);
        }
        Err(why) => tracing::warn!(
            container = %target.name, %service, %why,
            "compose config hash kept as it was: the next `docker-compose up -d` will recreate this container once, on the same image"
        ),
    }
    new
}

/// Each compose container's place in its project's dependency order (compose 1.29 sets no
/// depends_on label; `config --services` lists the services dependencies first). Projects
/// compose cannot be run on are left out, and keep the session's order.
pub async fn service_ranks(
    targets: &[Target],
    compose: Option<&Path>,
    docker_host: Option<&str>,
) -> std::collections::HashMap<String, usize> {
    let mut ranks = std::collections::HashMap::new();
    let Some(bin) = compose else { return ranks };
    let mut projects: Vec<Project> = Vec::new();
    for t in targets {
        if let Ok(p) = Project::of(t.labels().0) {
            if !projects.contains(&p) {
                projects.push(p);
            }
        }
    }
    for project in projects {
        let services = match run(bin, &project, docker_host, &["config", "--services"]).await {
            Ok(out) => out,
            Err(why) => {
                tracing::debug!(project = %project.name, %why, "compose service order unknown");
                continue;
            }
        };
        let order: Vec<&str> = services.lines().map(str::trim).collect();
        for t in targets {
            let labels = t.labels();
            let Some((name, service)) = labels.compose_service() else {
                continue;
            };
            if let Some(rank) = order.iter().position(|s| *s == service) {
                if name == project.name {
                    ranks.insert(t.name.clone(), rank);
                }
            }
        }
    }
    ranks
}

/// compose with `args`, bounded in time; its standard output.
async fn run(
    bin: &Path,
    project: &Project,
    docker_host: Option<&str>,
    args: &[&str],
) -> Result<String, String> {
    let mut cmd = project.command(bin, docker_host)?;
    cmd.args(args);
    let name = bin.display().to_string();
    // Off the async workers: compose is a Python program that takes a second to start.
    match tokio::task::spawn_blocking(move || run_bounded(cmd, &name)).await {
        Ok(result) => result,
        // Cancelled only when the runtime shuts down, which never resumes us.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Run compose, killed after `HASH_TIMEOUT`.
fn run_bounded(mut cmd: std::process::Command, name: &str) -> Result<String, String> {
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {name}: {e}"))?;
    let started = std::time::Instant::now();
    // Its output is a line per service: far below a pipe's buffer, so waiting first
    // cannot block it.
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > HASH_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{name} did not answer within {} s",
                    HASH_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for {name}: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("reading {name}'s output: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// compose prints `SERVICE HASH`, one service a line.
fn parse_hash(output: &str, service: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let (name, hash) = line.trim().split_once(' ')?;
        (name == service && hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| hash.to_owned())
    })
}

/// `docker-compose` on PATH, if there is one.
pub fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("docker-compose"))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hash_line_of_the_service() {
        let h = "a".repeat(64);
        let out = format!("db {}\nweb {h}\n", "b".repeat(64));
        assert_eq!(super::parse_hash(&out, "web"), Some(h));
        assert_eq!(super::parse_hash("web nothex\n", "web"), None);
    }
}
