//! Where the `zeromq` crate's socket connects: a private IPC listener per connection.
//!
//! The crate connects only to an endpoint it is given (it takes no stream of ours), so each of
//! its connections goes through a listener of ours, in front of which the guard sits. The
//! listeners live in a directory only this user can enter (created `0700` under the system's
//! temporary directory, removed with the source), so no other local user can take the
//! crate's place; each is a fresh socket file, removed as soon as it accepted its one
//! connection, so a connection the crate would open again by itself (it reconnects on its
//! own after a disconnect) finds nothing and cannot be paired with another publisher
//! connection.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{UnixListener, UnixStream};

/// The private directory of one source's listeners.
pub struct Loopback {
    directory: tempfile::TempDir,
    next: AtomicU64,
}

impl Loopback {
    /// Creates the directory (`0700`: created so, not left to the umask).
    pub fn new() -> std::io::Result<Loopback> {
        let directory = tempfile::Builder::new()
            .prefix("statscache-zeromq-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?;
        Ok(Loopback {
            directory,
            next: AtomicU64::new(0),
        })
    }

    /// A new listener, for one connection.
    pub fn listen(&self) -> std::io::Result<Listener> {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.directory.path().join(format!("{number}.sock"));
        let listener = UnixListener::bind(&path)?;
        Ok(Listener { listener, path })
    }
}

/// A listener for one connection of the crate's socket; its file goes with it.
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
}

impl Listener {
    /// The endpoint the crate's socket connects to.
    pub fn endpoint(&self) -> String {
        format!("ipc://{}", self.path.display())
    }

    /// The one connection, after which nothing listens here any more.
    pub async fn accept(self) -> std::io::Result<UnixStream> {
        let (stream, _address) = self.listener.accept().await?;
        Ok(stream)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // One unlink on a temporary directory: too short to be worth a blocking-pool task.
        if let Err(error) = std::fs::remove_file(&self.path) {
            tracing::debug!(path = %self.path.display(), %error, "cannot remove a listener's socket file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listeners_are_private_and_gone_once_they_accepted() {
        let loopback = Loopback::new().expect("directory");
        let mode = std::fs::metadata(loopback.directory.path())
            .expect("directory")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let listener = loopback.listen().expect("listen");
        let endpoint = listener.endpoint();
        let path = endpoint.strip_prefix("ipc://").expect("ipc").to_string();
        let connecting = tokio::spawn(async move { UnixStream::connect(path).await });
        listener.accept().await.expect("accept");
        connecting.await.expect("task").expect("connected");
        let path = endpoint.strip_prefix("ipc://").expect("ipc");
        assert!(!std::path::Path::new(path).exists());
        assert!(UnixStream::connect(path).await.is_err());
        let second = loopback.listen().expect("listen");
        assert_ne!(second.endpoint(), endpoint);
    }
}
