//! A real PostgreSQL (Debian's `postgresql`) per test, holding datanommer's database as the real
//! `datanommer.models` (PyPI) makes it (`tests/support/datanommer_fill.py`), and its dump
//! (`pg_dump`, custom format, as Fedora publishes datanommer's): for the bootstrap tests.
//!
//! PostgreSQL refuses to run as root: when the tests are root, the server and its tools run as
//! the `postgres` account the package created, in a data directory given to it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{ensure_installed, free_port, repo_root, wait_for};

/// The datanommer database of every test server.
pub const DATABASE: &str = "datanommer";

pub struct PostgresServer {
    /// `postgresql://postgres@127.0.0.1:<port>/datanommer`.
    pub url: String,
    port: u16,
    process: std::process::Child,
    _data: TempDir,
}

/// Where Debian puts PostgreSQL's programs (`/usr/lib/postgresql/<version>/bin`).
fn binaries() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (deploy/local/install.sh)")
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL with initdb")
}

/// `program`, run as the `postgres` account when this process is root (its uid and gid set on
/// the child itself, so that killing the child kills the server).
fn as_owner(program: &Path) -> Command {
    let mut command = Command::new(program);
    let Some((uid, gid)) = postgres_account() else {
        return command;
    };
    std::os::unix::process::CommandExt::uid(&mut command, uid);
    std::os::unix::process::CommandExt::gid(&mut command, gid);
    command
}

/// The `postgres` account's uid and gid, when this process is root and must not run the server.
fn postgres_account() -> Option<(u32, u32)> {
    let id = |flag: &str, account: Option<&str>| -> Option<u32> {
        let output = Command::new("id").arg(flag).args(account).output().ok()?;
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    };
    if id("-u", None)? != 0 {
        return None;
    }
    Some((id("-u", Some("postgres"))?, id("-g", Some("postgres"))?))
}

impl PostgresServer {
    /// A fresh cluster with an empty `datanommer` database.
    pub async fn start() -> PostgresServer {
        ensure_installed();
        let data = TempDir::new().expect("postgres data dir");
        if let Some((uid, gid)) = postgres_account() {
            std::os::unix::fs::chown(data.path(), Some(uid), Some(gid)).expect("chown data dir");
        }
        let cluster = data.path().join("cluster");
        let status = as_owner(&binaries().join("initdb"))
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "-D",
            ])
            .arg(&cluster)
            .stdout(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed");
        let port = free_port();
        let process = as_owner(&binaries().join("postgres"))
            .arg("-D")
            .arg(&cluster)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-k",
            ])
            .arg(data.path())
            .args(["-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let server = PostgresServer {
            url: format!("postgresql://postgres@127.0.0.1:{port}/{DATABASE}"),
            port,
            process,
            _data: data,
        };
        wait_for(
            "PostgreSQL to accept connections",
            Duration::from_secs(60),
            || async { server.psql("postgres", "SELECT 1").ok() },
        )
        .await;
        server
            .psql("postgres", &format!("CREATE DATABASE {DATABASE}"))
            .expect("create the datanommer database");
        server
    }

    /// Runs `sql` on `database` with psql; its output, or what went wrong.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let output = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-tAc", sql])
            .output()
            .map_err(|error| error.to_string())?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Stores each envelope of `lines` (JSON lines) with the real `datanommer.models`: see
    /// `tests/support/datanommer_fill.py` for how.
    pub async fn fill(&self, lines: &[String]) {
        let file = tempfile::NamedTempFile::new().expect("envelopes file");
        std::fs::write(file.path(), lines.join("\n")).expect("write envelopes");
        let output = tokio::process::Command::new("python3")
            .arg(repo_root().join("tests/support/datanommer_fill.py"))
            .arg(&self.url)
            .arg(file.path())
            .output()
            .await
            .expect("run datanommer_fill.py");
        assert!(
            output.status.success(),
            "datanommer_fill.py failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A `pg_dump` custom-format archive of the datanommer database, in `directory`.
    pub fn dump(&self, directory: &Path) -> PathBuf {
        let archive = directory.join("datanommer.pgdump");
        let output = Command::new("pg_dump")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-Fc", "-f"])
            .arg(&archive)
            .arg(DATABASE)
            .output()
            .expect("run pg_dump");
        assert!(
            output.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        archive
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
