//! nginx in front of test servers: the boilerplate of a foreground, unprivileged nginx
//! whose files stay in a test directory, around the `http` block a test writes.

use std::path::Path;
use std::process::{Command, Stdio};

use super::{free_port, require, wait_for_port, Proc};

/// Start nginx with `http` as the body of its `http` block, in which `@PORT@` is the port
/// it listens on and `@DIR@` is `dir` (for logs). Stopped when the Proc drops.
pub fn nginx(dir: &Path, http: &str) -> (Proc, u16) {
    require("nginx", "nginx");
    let port = free_port();
    let d = dir.display();
    let body = http
        .replace("@PORT@", &port.to_string())
        .replace("@DIR@", &d.to_string());
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{}}\nhttp {{\n    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n{body}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let mut child = Command::new("nginx")
        .arg("-c")
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, &mut child, "nginx");
    (Proc(child), port)
}
