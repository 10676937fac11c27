//! Cloud image uploads (`fedimg.image.*`): fedmsg.meta's `FedimgProcessor`. One sentence per
//! image event, with the AMI, virtualisation and volume types where the event has them.

use serde_json::Value;

use crate::message::Envelope;

use super::{py_str, Fields};

const ICON: &str = "https://apps.fedoraproject.org/img/icons/fedimg.png";

pub(super) fn fields(envelope: &Envelope) -> Fields {
    let msg = &envelope.msg;
    let topic = envelope.topic.as_str();
    Fields {
        subtitle: subtitle(msg, topic),
        link: Some(Some(String::new())),
        icon: Some(Some(ICON.to_string())),
        secondary_icon: Some(None),
        objects: objects(msg, topic),
    }
}

fn subtitle(msg: &Value, topic: &str) -> Option<Option<String>> {
    let name = py_str(msg.get("image_name")?);
    let dest = py_str(msg.get("destination")?);
    let extra = msg.get("extra");
    let extra_field = |key: &str| {
        extra
            .and_then(|extra| extra.get(key))
            .map(py_str)
            .unwrap_or_else(|| "None".to_string())
    };
    let details = format!(
        "({}, {}, {})",
        extra_field("id"),
        extra_field("virt_type"),
        extra_field("vol_type")
    );
    if topic.contains("image.upload") {
        let sentence = match msg.get("status")?.as_str() {
            Some("started") => Some(format!("{name} started uploading to {dest}")),
            Some("completed") => Some(format!("{name} finished uploading to {dest} {details}")),
            Some("failed") => Some(format!("{name} failed to upload to {dest}")),
            _ => None,
        };
        if sentence.is_some() {
            return Some(sentence);
        }
    }
    if topic.contains("image.test") {
        let verb = match msg.get("status")?.as_str() {
            Some("started") => "started testing on",
            Some("completed") => "finished testing on",
            Some("failed") => "failed testing on",
            // The original formats an empty template.
            _ => return Some(Some(String::new())),
        };
        return Some(Some(format!("{name} {verb} {dest} {details}")));
    }
    if topic.contains("image.publish") {
        return Some(Some(format!(
            "{name} published in region, {dest} {details}"
        )));
    }
    if topic.contains("image.copy") {
        let source = extra_field("source_image_id");
        return Some(Some(format!(
            "{name} copied to {dest} using source image, {source} {details}"
        )));
    }
    Some(None)
}

fn objects(msg: &Value, topic: &str) -> Option<Vec<String>> {
    let status = || msg.get("status").and_then(Value::as_str);
    if topic.contains("image.upload") {
        return Some(vec![format!("image/upload/{}", status()?)]);
    }
    if topic.contains("image.test") {
        return Some(vec![format!("image/test/{}", status()?)]);
    }
    Some(Vec::new())
}
