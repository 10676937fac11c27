//! Contributions to pagure.io per project, as statscache_plugins' `pagure_project_contribution`
//! counted them (statscache identifier `number-of-contribution-per-project-to-pagure.io-1d`).
//!
//! Not declarative because the project's path depends on the topic: a pull request names it in
//! `pullrequest.project.name`, a push in `repo.name`, everything else in `project.name`; and
//! comment edits are not counted. A message without the field its topic calls for counts for
//! no project (statscache's plugin raised on it). The total and the per-user counts are
//! declarative (`builtin.rs`).

use serde_json::Value;
use statscache_shared::config::StatisticKind;

use crate::plugin::{Fact, Message, Plugin, PluginError, PluginInfo};
use crate::topic_filter::TopicFilter;

/// The topics statscache's pagure plugins read: pagure.io's production instance.
pub const PAGURE_TOPICS: &str = "io.pagure.prod.>";

const EDITED_COMMENT: &str = "io.pagure.prod.pagure.issue.comment.edited";
const PULL_REQUEST: &str = "io.pagure.prod.pagure.pull-request";
const PUSH: &str = "io.pagure.prod.pagure.git.receive";

pub struct PagureProjects {
    info: PluginInfo,
}

impl PagureProjects {
    pub fn new() -> PagureProjects {
        let info = PluginInfo::new(
            "Pagure Contributions by Project",
            "Messages of pagure.io (io.pagure.prod topics) per project, as statscache's \
             number-of-contribution-per-project-to-pagure.io: pull requests by their project, \
             pushes by their repository, comment edits not counted.",
            StatisticKind::Count,
            TopicFilter::new(&[PAGURE_TOPICS]),
        );
        PagureProjects { info }
    }
}

impl Default for PagureProjects {
    fn default() -> Self {
        PagureProjects::new()
    }
}

/// The project a pagure.io message of `topic` names, if it names one where its topic says.
fn project<'a>(topic: &str, msg: &'a Value) -> Option<&'a str> {
    if topic == EDITED_COMMENT {
        return None;
    }
    let path: &[&str] = if topic.contains(PULL_REQUEST) {
        &["pullrequest", "project", "name"]
    } else if topic == PUSH {
        &["repo", "name"]
    } else {
        &["project", "name"]
    };
    let mut value = msg;
    for field in path {
        value = value.get(field)?;
    }
    value.as_str()
}

impl Plugin for PagureProjects {
    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn process(&self, message: &Message, facts: &mut Vec<Fact>) -> Result<(), PluginError> {
        if let Some(name) = project(&message.envelope.topic, &message.envelope.msg) {
            facts.push(Fact::key(name));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_project_is_where_the_topic_says() {
        let msg = json!({
            "pullrequest": {"project": {"name": "from-pr"}},
            "repo": {"name": "from-repo"},
            "project": {"name": "from-project"},
        });
        let cases = [
            ("io.pagure.prod.pagure.pull-request.new", Some("from-pr")),
            ("io.pagure.prod.pagure.git.receive", Some("from-repo")),
            ("io.pagure.prod.pagure.issue.new", Some("from-project")),
            ("io.pagure.prod.pagure.issue.comment.edited", None),
        ];
        for (topic, expected) in cases {
            assert_eq!(project(topic, &msg), expected, "{topic}");
        }
        assert_eq!(
            project("io.pagure.prod.pagure.git.receive", &json!({"project": {}})),
            None
        );
    }
}
