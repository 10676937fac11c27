//! Rules for the collaboration services: forges, CI, accounts, meetings, mailing lists and
//! infrastructure. Each function ports the `usernames` method of the fedmsg.meta processor of
//! the same name; none of these services names packages.

use crate::message::Envelope;
use serde_json::Value;

use super::{has, items, text, username_from_email, Found};

/// Ansible runs: who ran the playbook.
pub(super) fn ansible(envelope: &Envelope, found: &mut Found) {
    found.user(text(&envelope.msg, "/userid"));
}

/// Ask Fedora: the agent and the people newly @mentioned in a post.
pub(super) fn askbot(envelope: &Envelope, found: &mut Found) {
    found.user(text(&envelope.msg, "/agent"));
    for user in items(&envelope.msg, "/newly_mentioned_users") {
        found.user(user.as_str());
    }
}

/// The CentOS CI pipelines (`ci`, and the older `allpackages`): the user whose commit is tested.
pub(super) fn centos_ci(envelope: &Envelope, found: &mut Found) {
    found.user(text(&envelope.msg, "/username"));
}

/// The account system: the agent and the user acted upon.
pub(super) fn fas(envelope: &Envelope, found: &mut Found) {
    found.user(envelope.msg.get("agent").and_then(fas_person));
    found.user(envelope.msg.get("user").and_then(fas_person));
}

/// A FAS person: a username string, or an object with a `username` (or else a `name`).
fn fas_person(value: &Value) -> Option<&str> {
    match value {
        Value::Object(_) if has(value, "username") => text(value, "/username"),
        Value::Object(_) => text(value, "/name"),
        _ => value.as_str(),
    }
}

/// Badges: the person awarded, advanced or logged in.
pub(super) fn fedbadges(envelope: &Envelope, found: &mut Found) {
    // Awards name a "user", rank changes and logins a "person".
    if has(&envelope.msg, "user") {
        found.user(text(&envelope.msg, "/user/username"));
    } else {
        found.user(text(&envelope.msg, "/person/nickname"));
    }
}

/// The calendar: who created, changed or deleted a meeting or calendar.
pub(super) fn fedocal(envelope: &Envelope, found: &mut Found) {
    found.user(text(&envelope.msg, "/agent"));
}

/// Elections: who acted ("agent" in old messages, "fas_user" in new ones).
pub(super) fn fedora_elections(envelope: &Envelope, found: &mut Found) {
    if has(&envelope.msg, "agent") {
        found.user(text(&envelope.msg, "/agent"));
    } else {
        found.user(text(&envelope.msg, "/fas_user"));
    }
}

/// Notifications (FMN): the user whose preferences changed, from `<name>.id.fedoraproject.org`.
pub(super) fn fmn(envelope: &Envelope, found: &mut Found) {
    let openid = text(&envelope.msg, "/openid");
    found.user(openid.and_then(|openid| openid.split('.').next()));
}

/// GitHub: the FAS accounts of the GitHub users involved, which the bridge looked up, except
/// organisations.
pub(super) fn github(envelope: &Envelope, found: &mut Found) {
    let Some(accounts) = envelope.msg.get("fas_usernames").and_then(Value::as_object) else {
        return;
    };
    for name in accounts.values().filter_map(Value::as_str) {
        if !name.starts_with("github_org_") {
            found.user(Some(name));
        }
    }
}

/// Fedora Hubs: the user, the agent, and the owner of a personal hub. Stream hubs are private,
/// so their messages name nobody.
pub(super) fn hubs(envelope: &Envelope, found: &mut Found) {
    let msg = &envelope.msg;
    let hub_type = text(msg, "/hub_type");
    if hub_type == Some("stream") {
        return;
    }
    found.user(text(msg, "/username"));
    found.user(text(msg, "/agent"));
    if hub_type == Some("user") {
        found.user(text(msg, "/hub_name"));
    }
}

/// The infrastructure git repositories: the committer.
pub(super) fn infragit(envelope: &Envelope, found: &mut Found) {
    found.user(text(&envelope.msg, "/commit/username"));
}

/// IRC karma: who gave it and who received it.
pub(super) fn irc(envelope: &Envelope, found: &mut Found) {
    found.user(text(&envelope.msg, "/agent"));
    found.user(text(&envelope.msg, "/recipient"));
}

/// Mailing lists: the sender, if the address is a Fedora one.
pub(super) fn mailman(envelope: &Envelope, found: &mut Found) {
    let from = text(&envelope.msg, "/msg/from").unwrap_or_default();
    found.user(username_from_email(address_from_header(from)));
}

/// The address of a `From:` header: `Name <address>`, or a bare `address (Name)`.
fn address_from_header(from: &str) -> &str {
    if let Some((_, after_open)) = from.rsplit_once('<') {
        if let Some((address, _)) = after_open.split_once('>') {
            return address.trim();
        }
    }
    from.split_whitespace().next().unwrap_or_default()
}

/// Meetings: every attendee except the bot itself. (fedmsg.meta maps IRC nicks to FAS names
/// through its FAS cache; offline the nick is kept, as fedmsg.meta does for unknown nicks.)
pub(super) fn meetbot(envelope: &Envelope, found: &mut Found) {
    // Attendees are a {nick: lines spoken} object.
    let Some(attendees) = envelope.msg.get("attendees").and_then(Value::as_object) else {
        return;
    };
    for nick in attendees.keys() {
        if nick != "zodbot" {
            found.user(Some(nick));
        }
    }
}

/// Nagios: whoever acknowledged the problem, from their OpenID URL.
pub(super) fn nagios(envelope: &Envelope, found: &mut Found) {
    for pointer in ["/service_ack_author", "/host_ack_author"] {
        // `http://<name>.id.fedoraproject.org/` → `<name>`
        let openid = text(&envelope.msg, pointer).unwrap_or_default();
        let after_scheme = openid.rsplit("://").next().unwrap_or_default();
        found.user(after_scheme.split('.').next());
    }
}

/// Wallpaper elections: the agent and the submitter of a candidate.
pub(super) fn nuancier(envelope: &Envelope, found: &mut Found) {
    found.user(text(&envelope.msg, "/agent"));
    found.user(text(&envelope.msg, "/candidate/submitter"));
}

/// On Demand Compose Service: the owner of the compose.
pub(super) fn odcs(envelope: &Envelope, found: &mut Found) {
    found.user(text(&envelope.msg, "/compose/owner"));
}

/// openQA: the commenter (job messages name nobody).
pub(super) fn openqa(envelope: &Envelope, found: &mut Found) {
    found.user(text(&envelope.msg, "/user"));
}

/// Pagure: the agent, or for old push messages the committer if their address is a Fedora one.
pub(super) fn pagure(envelope: &Envelope, found: &mut Found) {
    let agent = text(&envelope.msg, "/agent").filter(|agent| !agent.is_empty());
    if agent.is_some() {
        found.user(agent);
    } else if envelope.topic.contains("pagure.git.receive") {
        let email = text(&envelope.msg, "/commit/email").unwrap_or_default();
        found.user(username_from_email(email));
    }
}

/// The blog aggregator: the author of the post, when planet knows their account.
pub(super) fn planet(envelope: &Envelope, found: &mut Found) {
    found.user(text(&envelope.msg, "/username"));
}

/// Run Another Test System: who requested the run.
pub(super) fn rats(envelope: &Envelope, found: &mut Found) {
    found.user(text(&envelope.msg, "/agent"));
}

/// Fedora Hosted trac: the agent, wiki page author, ticket owner, reporter and CCs, committer.
pub(super) fn trac(envelope: &Envelope, found: &mut Found) {
    let msg = &envelope.msg;
    found.user(text(msg, "/agent"));
    for pointer in [
        "/page/author",
        "/ticket/owner",
        "/ticket/reporter",
        "/commit/username",
    ] {
        found.user(text(msg, pointer).map(str::trim));
    }
    // CCs are one comma-separated string.
    let cc = text(msg, "/ticket/cc").unwrap_or_default();
    for user in cc.split(',') {
        found.user(Some(user.trim()));
    }
}

/// WaiverDB: who waived the result.
pub(super) fn waiverdb(envelope: &Envelope, found: &mut Found) {
    found.user(text(&envelope.msg, "/username"));
}

/// The wiki: the editor or uploader. Wiki user names are capitalised; FAS names are not.
pub(super) fn wiki(envelope: &Envelope, found: &mut Found) {
    let msg = &envelope.msg;
    let user = if has(msg, "user") {
        text(msg, "/user")
    } else {
        text(msg, "/user_text")
    };
    found.user(user.map(str::to_lowercase).as_deref());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_taken_from_from_headers() {
        let cases = [
            (
                "\"Nicolas Mailhot\" <nim@fedoraproject.org>",
                "nim@fedoraproject.org",
            ),
            ("Jaroslav Reznik <jreznik@redhat.com>", "jreznik@redhat.com"),
            (
                "spot@fedoraproject.org (Tom Callaway)",
                "spot@fedoraproject.org",
            ),
            ("  spot@fedoraproject.org ", "spot@fedoraproject.org"),
            ("", ""),
        ];
        for (header, address) in cases {
            assert_eq!(address_from_header(header), address, "{header}");
        }
    }
}
