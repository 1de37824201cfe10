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

/// How long asking compose for a hash may take (it reads the files and inspects images).
const HASH_TIMEOUT: Duration = Duration::from_secs(60);

/// `target`, with its compose labels made to match `image_id`, ready to be replaced on it.
/// Not a compose container: unchanged.
pub async fn relabel(
    target: &Target,
    image_id: &str,
    compose: Option<&Path>,
    docker_host: Option<&str>,
) -> Target {
    let labels = target.labels();
    let Some((project, service)) = labels.compose_service() else {
        return target.clone();
    };
    let (project, service) = (project.to_owned(), service.to_owned());
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
    let files: Vec<PathBuf> = map
        .get(CONFIG_FILES)
        .map(|f| f.split(',').map(|p| PathBuf::from(p.trim())).collect())
        .unwrap_or_default();
    let dir = map.get(WORKING_DIR).map(PathBuf::from);
    let asked = match (compose, dir) {
        (Some(bin), Some(dir)) => {
            config_hash(bin, &project, &service, &dir, &files, docker_host).await
        }
        (None, _) => Err("no docker-compose binary (--compose-bin)".to_owned()),
        (_, None) => Err(format!("no {WORKING_DIR} label")),
    };
    match asked {
        Ok(hash) => {
            tracing::info!(container = %target.name, %project, %service, %hash, "compose config hash for the new image");
            map.insert(CONFIG_HASH.to_owned(), hash);
        }
        Err(why) => tracing::warn!(
            container = %target.name, %project, %service, %why,
            "compose config hash kept as it was: the next `docker-compose up -d` will recreate this container once, on the same image"
        ),
    }
    new
}

async fn config_hash(
    bin: &Path,
    project: &str,
    service: &str,
    dir: &Path,
    files: &[PathBuf],
    docker_host: Option<&str>,
) -> Result<String, String> {
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--project-directory")
        .arg(dir)
        .args(["-p", project])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for file in files {
        if !file.exists() {
            return Err(format!(
                "the compose file {} is not readable here",
                file.display()
            ));
        }
        cmd.arg("-f").arg(file);
    }
    cmd.args(["config", &format!("--hash={service}")]);
    if let Some(host) = docker_host {
        cmd.env("DOCKER_HOST", host);
    }
    let name = bin.display().to_string();
    let service = service.to_owned();
    // Off the async workers: compose is a Python program that takes a second to start.
    let ran = tokio::task::spawn_blocking(move || run_bounded(cmd, &name, &service)).await;
    match ran {
        Ok(result) => result,
        // Cancelled only when the runtime shuts down, which never resumes us.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Run compose, killed after `HASH_TIMEOUT`; its hash for `service`.
fn run_bounded(
    mut cmd: std::process::Command,
    name: &str,
    service: &str,
) -> Result<String, String> {
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
                    "{name} config --hash did not answer within {} s",
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
            "{name} config --hash failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_hash(&String::from_utf8_lossy(&out.stdout), service)
        .ok_or_else(|| format!("{name} config --hash printed no hash for {service}"))
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
