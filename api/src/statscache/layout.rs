//! The layout of the release-engineering log, for dashboards arranging it (releng-dash): its
//! groups and components, whose ids are the log's categories, and the display options
//! statscache's layout named (`show_time_at`, `show_status`, `status_verb_map`,
//! `status_class_map`, `old_log_threshold`, per component `link_for`). Those names and ids are
//! what clients read; the labels are ours. Only the log has a layout, as in statscache.

use serde_json::{json, Value};

/// The identifier with a layout.
pub const LAYOUT_IDENT: &str = "release-engineering-event-logs";

fn component(id: &str, name: &str) -> Value {
    json!({ "id": id, "name": name })
}

/// The layout document.
pub fn releng() -> Value {
    let mut branched_amis = component("ami-branched", "Cloud images (branched)");
    branched_amis["link_for"] = json!("name");
    branched_amis["show_time_at"] = json!(false);
    let mut rawhide_amis = component("ami-rawhide", "Cloud images (rawhide)");
    rawhide_amis["link_for"] = json!("message");
    rawhide_amis["show_time_at"] = json!(false);
    let mut appliance = component("artifact-appliance_armhfp", "armhfp");
    appliance["show_status"] = json!(false);
    appliance["show_time_at"] = json!(false);
    let mut live_x86_64 = component("artifact-livecd_x86_64", "x86_64");
    live_x86_64["show_time_at"] = json!(false);
    let mut live_i686 = component("artifact-livecd_i686", "i686");
    live_i686["show_time_at"] = json!(false);
    json!({
        "groups": [
            {
                "id": "compose",
                "components": [
                    component("compose-rawhide_primary", "Rawhide compose (primary architectures)"),
                    component("compose-rawhide_arm", "Rawhide compose (arm)"),
                    component("compose-rawhide_ppc", "Rawhide compose (ppc)"),
                    component("compose-rawhide_s390", "Rawhide compose (s390)"),
                ],
            },
            {
                "id": "updates",
                "components": [
                    component("updates-fedora", "Updates pushed (Fedora)"),
                    component("updates-epel", "Updates pushed (EPEL)"),
                ],
            },
            {
                "id": "amis",
                "components": [branched_amis, rawhide_amis],
            },
            {
                "id": "appliance",
                "name": "Appliance images (rawhide)",
                "components": [appliance],
            },
            {
                "id": "livecd",
                "name": "Live images (rawhide)",
                "components": [live_x86_64, live_i686],
            },
        ],
        "default_options": {
            "show_time_at": true,
            "show_status": true,
            "status_verb_map": {
                "start": "started",
                "complete": "completed",
                "open": "opened",
                "close": "closed",
            },
            "status_class_map": {
                "start": "text-warning",
                "complete": "text-primary",
                "failed": "text-danger",
                "open": "text-warning",
                "opened": "text-warning",
                "closed": "text-primary",
            },
            "old_log_threshold": { "key": "hours", "value": 24 },
        },
    })
}
