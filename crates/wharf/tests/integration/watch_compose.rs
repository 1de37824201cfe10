//! A docker-compose (Debian's 1.29) project updated by `wharf watch` on the real engine:
//! services in dependency order, the compose labels kept with a config hash compose agrees
//! with, so a later `docker-compose up -d` recreates nothing; networks, aliases and
//! volumes intact.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;
use crate::watch::*;

/// `docker-compose down -v` for the project, however the test ends.
struct Project {
    name: String,
    file: PathBuf,
    docker_config: PathBuf,
}

impl Project {
    fn compose(&self) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.env("DOCKER_CONFIG", &self.docker_config)
            .args(["-p", &self.name, "-f"])
            .arg(&self.file);
        cmd
    }

    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.name)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose().args(["down", "-v"]).output();
    }
}

fn compose_file(dir: &Path, host: &str) -> PathBuf {
    let file = dir.join("docker-compose.yml");
    let yaml = format!(
        r#"version: "3.7"
services:
  db:
    image: {host}/apps/cdb:latest
    volumes:
      - data:/data
    networks:
      back:
        aliases: [database]
  web:
    image: {host}/apps/cweb:latest
    depends_on: [db]
    volumes:
      - data:/shared
    networks:
      back:
        aliases: [frontend]
volumes:
  data: {{}}
networks:
  back: {{}}
"#
    );
    std::fs::write(&file, yaml).unwrap();
    file
}

fn container_id(name: &str) -> String {
    inspect(name)["Id"].as_str().unwrap().to_owned()
}

#[test]
fn watch_compose_project_updates_in_order_and_up_d_recreates_nothing() {
    require("docker-compose", "docker-compose");
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let images: Vec<String> = ["cdb1", "cweb1", "cdb2", "cweb2"]
        .iter()
        .map(|m| serving_image(&mut cleanup, m, &[]))
        .collect();
    let host = registry.host();
    for repo in ["cdb", "cweb"] {
        cleanup.images.push(format!("{host}/apps/{repo}:latest"));
    }
    registry.push(&images[0], "apps/cdb:latest");
    registry.push(&images[1], "apps/cweb:latest");
    let dir = tempfile::tempdir().unwrap();
    let project = Project {
        name: unique("wharfcompose").replace('-', ""),
        file: compose_file(dir.path(), &host),
        docker_config: registry.docker_config(),
    };
    let (db, web) = (project.container("db"), project.container("web"));
    let up = project.compose().args(["up", "-d"]).output().unwrap();
    assert!(
        up.status.success(),
        "docker-compose up: {}",
        output_text(&up)
    );
    run(Command::new("docker").args(["exec", &db, "sh", "-c", "echo kept > /data/f"]));

    registry.push(&images[2], "apps/cdb:latest");
    registry.push(&images[3], "apps/cweb:latest");
    // Named dependants first: the order must come from the project, not the command line.
    let report = registry.watch(&[&web, &db]);
    let lines = report["containers"].as_array().unwrap();
    let order: Vec<&str> = lines.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(order, [db.as_str(), web.as_str()], "{report:#}");
    for line in lines {
        assert_eq!(line["outcome"], "updated", "{report:#}");
    }
    assert_eq!(inspect(&db)["Image"], image_id(&images[2]).as_str());
    assert_eq!(inspect(&web)["Image"], image_id(&images[3]).as_str());

    // The hash wharf set is the one compose computes for the new image.
    let hash = run(project.compose().args(["config", "--hash=web"]));
    let label = &inspect(&web)["Config"]["Labels"]["com.docker.compose.config-hash"];
    assert_eq!(hash.split_whitespace().nth(1), label.as_str(), "{hash}");

    let ids = (container_id(&db), container_id(&web));
    let up = project.compose().args(["up", "-d"]).output().unwrap();
    let said = output_text(&up);
    assert!(up.status.success(), "docker-compose up -d: {said}");
    assert!(
        !said.contains("Recreating"),
        "docker-compose recreated: {said}"
    );
    assert_eq!((container_id(&db), container_id(&web)), ids, "{said}");
    let ps = run(project.compose().args(["ps"]));
    assert!(ps.contains(&db) && ps.contains(&web), "{ps}");

    // Networks, aliases and volumes as compose set them up.
    let network = format!("{}_back", project.name);
    let aliases = inspect(&web)["NetworkSettings"]["Networks"][&network]["Aliases"].clone();
    let aliases: Vec<&str> = aliases
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        aliases.contains(&"frontend") && aliases.contains(&"web"),
        "{aliases:?}"
    );
    let reached = Command::new("docker")
        .args(["exec", &web, "sh", "-c", "cat /shared/f"])
        .output()
        .unwrap();
    assert_eq!(output_text(&reached).trim(), "kept");
    let db_aliases = inspect(&db)["NetworkSettings"]["Networks"][&network]["Aliases"].to_string();
    assert!(db_aliases.contains("database"), "{db_aliases}");
}
