//! Avatar URLs as fedmsg.meta builds them offline (`fasshim.avatar_url`): a few services have
//! a fixed icon, everyone else gets the libravatar of their Fedora OpenID, hashed locally.

use md5::Md5;
use sha2::{Digest, Sha256};

/// Services whose avatar is their icon rather than a person's libravatar (`{size}` = 64).
const FIXED_AVATARS: &[(&str, &str)] = &[
    (
        "bodhi",
        "https://apps.fedoraproject.org/img/icons/bodhi-64.png",
    ),
    (
        "koschei",
        "https://apps.fedoraproject.org/img/icons/koschei-64.png",
    ),
    (
        "taskotron",
        "https://apps.fedoraproject.org/img/icons/taskotron-64.png",
    ),
];

/// The 64-pixel avatar of a FAS user, `retro` when they have none.
pub(super) fn of_user(username: &str) -> String {
    if let Some((_, url)) = FIXED_AVATARS.iter().find(|(name, _)| *name == username) {
        return url.to_string();
    }
    of_openid(&format!("http://{username}.id.fedoraproject.org/"))
}

/// The 64-pixel libravatar of an OpenID URL (SHA-256 of the URL, no DNS federation lookup).
pub(super) fn of_openid(openid: &str) -> String {
    libravatar(&Sha256::digest(openid.as_bytes()))
}

/// The 64-pixel libravatar of an email address (MD5 of the address, as libravatar hashes them).
pub(super) fn of_email(email: &str) -> String {
    libravatar(&Md5::digest(email.as_bytes()))
}

fn libravatar(digest: &[u8]) -> String {
    let mut url = String::with_capacity(100);
    url.push_str("https://seccdn.libravatar.org/avatar/");
    for byte in digest {
        url.push_str(&format!("{byte:02x}"));
    }
    url.push_str("?s=64&d=retro");
    url
}
