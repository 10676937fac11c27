//! Where the `zeromq` crate's socket connects: a private IPC listener per connection.
//!
//! The crate connects only to an endpoint it is given (it takes no stream of ours), so each of
//! its connections goes through a listener of ours, in front of which the guard sits. Each
//! listener is a socket file in a directory of its own that only this user can enter
//! (`0700`, under the system's temporary directory), so no other local user can take the
//! crate's place; file and directory are removed as soon as the one connection is accepted,
//! so a connection the crate would open again by itself (it reconnects on its own after a
//! disconnect) finds nothing, and an ingestor killed leaves nothing behind but what was
//! between a bind and its accept.

use std::os::unix::fs::PermissionsExt;

use tokio::net::{UnixListener, UnixStream};

/// A listener for one connection of the crate's socket; its file and directory go with it.
pub struct Listener {
    // Dropped first: the socket is closed before its file and directory are removed.
    listener: UnixListener,
    endpoint: String,
    _directory: tempfile::TempDir,
}

/// A new listener, for one connection.
pub fn listen() -> std::io::Result<Listener> {
    let directory = tempfile::Builder::new()
        .prefix("statscache-zeromq-")
        // Made so, not left to the umask.
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()?;
    let path = directory.path().join("socket");
    let listener = UnixListener::bind(&path)?;
    Ok(Listener {
        listener,
        endpoint: format!("ipc://{}", path.display()),
        _directory: directory,
    })
}

/// Whether listeners can be made (a writable temporary directory, a path short enough):
/// checked once at start-up, so that a host without one fails at once, not at every connect.
pub fn check() -> std::io::Result<()> {
    listen().map(drop)
}

impl Listener {
    /// The endpoint the crate's socket connects to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The one connection, after which nothing listens here any more.
    pub async fn accept(self) -> std::io::Result<UnixStream> {
        let (stream, _address) = self.listener.accept().await?;
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[tokio::test]
    async fn listeners_are_private_and_gone_once_they_accepted() {
        let listener = listen().expect("listen");
        let endpoint = listener.endpoint().to_string();
        let path = Path::new(endpoint.strip_prefix("ipc://").expect("ipc")).to_path_buf();
        let directory = path.parent().expect("directory").to_path_buf();
        let mode = std::fs::metadata(&directory)
            .expect("directory")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let connecting = tokio::spawn(UnixStream::connect(path.clone()));
        listener.accept().await.expect("accept");
        connecting.await.expect("task").expect("connected");
        assert!(!path.exists());
        assert!(!directory.exists());
        assert!(UnixStream::connect(&path).await.is_err());
        let second = listen().expect("listen");
        assert_ne!(second.endpoint(), endpoint);
    }
}
