//! The docker-credential-helpers protocol: `docker-credential-<name> <action>`, with the
//! request on stdin and the answer on stdout.
//!
//! - `get`: stdin is the server URL; stdout is `{"ServerURL","Username","Secret"}`. A
//!   Username of `<token>` means Secret is an identity (refresh) token.
//! - `store`: stdin is that same JSON object.
//! - `erase`: stdin is the server URL.
//! - `list`: stdout is `{"<server URL>": "<username>", ...}`.
//!
//! A helper that fails prints its message on stdout and exits non-zero; the message
//! `credentials not found in native keychain` means "nothing stored", not a failure.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Credential, CredentialError, Secret};

/// The exact message helpers print when they hold nothing for a server.
pub const NOT_FOUND_MESSAGE: &str = "credentials not found in native keychain";
/// The Username a helper answers with when Secret is an identity token.
pub const TOKEN_USERNAME: &str = "<token>";
/// How much of a failing helper's output goes into an error.
const MAX_MESSAGE: usize = 300;

#[derive(Serialize, Deserialize)]
struct HelperCredentials {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// One credential helper program, found on the PATH of the injected environment.
pub struct Helper<'a> {
    program_name: String,
    program: PathBuf,
    env: &'a HashMap<String, String>,
    timeout: Duration,
    /// Named in every error, so a user knows which registry's lookup failed.
    registry: String,
}

struct Ran {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl<'a> Helper<'a> {
    /// Find `docker-credential-<name>` on `PATH` (from `env`, else this process's).
    pub fn find(
        name: &str,
        configured_by: &'static str,
        registry: &str,
        config_path: &Path,
        env: &'a HashMap<String, String>,
        timeout: Duration,
    ) -> Result<Helper<'a>, CredentialError> {
        let program_name = format!("docker-credential-{name}");
        let not_found = || CredentialError::HelperNotFound {
            helper: program_name.clone(),
            registry: registry.to_owned(),
            configured_by,
            config: config_path.to_owned(),
        };
        // A helper name is a suffix, never a path: refuse `../x` rather than run it.
        if name.is_empty() || name.contains('/') {
            return Err(not_found());
        }
        let path: OsString = env
            .get("PATH")
            .map(OsString::from)
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default();
        let program = std::env::split_paths(&path)
            .map(|dir| dir.join(&program_name))
            .find(|p| is_executable(p))
            .ok_or_else(not_found)?;
        Ok(Helper {
            program_name,
            program,
            env,
            timeout,
            registry: registry.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.program_name
    }

    /// The credential stored for `server_url`, `None` when the helper holds none.
    pub fn get(&self, server_url: &str) -> Result<Option<Credential>, CredentialError> {
        let ran = self.run("get", server_url.as_bytes())?;
        if !ran.status.success() {
            if self.says_not_found(&ran) {
                return Ok(None);
            }
            return Err(self.failed("get", &ran));
        }
        let creds: HelperCredentials =
            serde_json::from_slice(&ran.stdout).map_err(|e| CredentialError::HelperOutput {
                helper: self.program_name.clone(),
                registry: self.registry.clone(),
                action: "get",
                // serde_json's message names a position, never the content: no secret leaks.
                detail: e.to_string(),
            })?;
        if creds.username.is_empty() && creds.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(if creds.username == TOKEN_USERNAME {
            Credential::IdentityToken {
                username: String::new(),
                token: Secret::new(creds.secret),
            }
        } else {
            Credential::Basic {
                username: creds.username,
                password: Secret::new(creds.secret),
            }
        }))
    }

    pub fn store(&self, server_url: &str, credential: &Credential) -> Result<(), CredentialError> {
        let (username, secret) = match credential {
            Credential::Basic { username, password } => (username.as_str(), password.expose()),
            Credential::IdentityToken { token, .. } => (TOKEN_USERNAME, token.expose()),
        };
        let body = serde_json::to_vec(&HelperCredentials {
            server_url: server_url.to_owned(),
            username: username.to_owned(),
            secret: secret.to_owned(),
        })
        .map_err(|e| CredentialError::HelperOutput {
            helper: self.program_name.clone(),
            registry: self.registry.clone(),
            action: "store",
            detail: e.to_string(),
        })?;
        let ran = self.run("store", &body)?;
        if ran.status.success() {
            Ok(())
        } else {
            Err(self.failed("store", &ran))
        }
    }

    /// Erase `server_url`; `Ok(false)` when the helper held nothing for it.
    pub fn erase(&self, server_url: &str) -> Result<bool, CredentialError> {
        let ran = self.run("erase", server_url.as_bytes())?;
        if ran.status.success() {
            Ok(true)
        } else if self.says_not_found(&ran) {
            Ok(false)
        } else {
            Err(self.failed("erase", &ran))
        }
    }

    /// Server URL → username of everything the helper holds.
    pub fn list(&self) -> Result<BTreeMap<String, String>, CredentialError> {
        let ran = self.run("list", b"")?;
        if !ran.status.success() {
            return Err(self.failed("list", &ran));
        }
        serde_json::from_slice(&ran.stdout).map_err(|e| CredentialError::HelperOutput {
            helper: self.program_name.clone(),
            registry: self.registry.clone(),
            action: "list",
            detail: e.to_string(),
        })
    }

    fn says_not_found(&self, ran: &Ran) -> bool {
        let is = |b: &[u8]| String::from_utf8_lossy(b).trim() == NOT_FOUND_MESSAGE;
        is(&ran.stdout) || is(&ran.stderr)
    }

    fn failed(&self, action: &'static str, ran: &Ran) -> CredentialError {
        // Helpers report errors on stdout; some write stderr. Neither holds a secret on
        // failure, but keep it short in case a broken helper prints a lot.
        let mut message = String::from_utf8_lossy(&ran.stdout).trim().to_owned();
        if message.is_empty() {
            message = String::from_utf8_lossy(&ran.stderr).trim().to_owned();
        }
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        CredentialError::HelperFailed {
            helper: self.program_name.clone(),
            registry: self.registry.clone(),
            action,
            status: ran.status.to_string(),
            message,
        }
    }

    /// Run the helper with `input` on stdin, killing it after the timeout: a helper waiting
    /// on a network (ECR, gcloud) must not hang an update check forever.
    fn run(&self, action: &'static str, input: &[u8]) -> Result<Ran, CredentialError> {
        let io_error = |e: std::io::Error| CredentialError::HelperFailed {
            helper: self.program_name.clone(),
            registry: self.registry.clone(),
            action,
            status: "not run".into(),
            message: e.to_string(),
        };
        // The helper sees exactly the injected environment (HOME, AWS_*, PATH...).
        let spawn = || {
            Command::new(&self.program)
                .arg(action)
                .env_clear()
                .envs(self.env)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        };
        // ETXTBSY: a helper just written (an installer, a test) may still be open for
        // writing in a process forked meanwhile; it goes away within moments.
        const ETXTBSY: i32 = 26;
        let mut attempts = 0;
        let mut child = loop {
            match spawn() {
                Err(e) if e.raw_os_error() == Some(ETXTBSY) && attempts < 20 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(25));
                }
                other => break other.map_err(io_error)?,
            }
        };
        let stdout = child.stdout.take().map(spawn_reader);
        let stderr = child.stderr.take().map(spawn_reader);
        if let Some(mut stdin) = child.stdin.take() {
            // A helper may exit without reading (e.g. `list`): a broken pipe is not an error.
            let _ = stdin.write_all(input);
        }
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait().map_err(io_error)? {
                Some(status) => break status,
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(CredentialError::HelperTimeout {
                        helper: self.program_name.clone(),
                        registry: self.registry.clone(),
                        action,
                        seconds: self.timeout.as_secs(),
                    });
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let collect = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
            h.and_then(|h| h.join().ok()).unwrap_or_default()
        };
        Ok(Ran {
            status,
            stdout: collect(stdout),
            stderr: collect(stderr),
        })
    }
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
