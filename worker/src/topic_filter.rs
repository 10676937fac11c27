//! Topic patterns in NATS style: `*` matches one token, `>` (last) matches one or more.
//!
//! The same syntax operators use for stream subjects, so a plugin's filter reads like a
//! subscription: `org.fedoraproject.*.buildsys.build.state.change`, `org.fedoraproject.prod.>`.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicFilter {
    patterns: Vec<Vec<String>>,
}

impl TopicFilter {
    /// Matches every topic.
    pub fn all() -> TopicFilter {
        TopicFilter::default()
    }

    pub fn new<S: AsRef<str>>(patterns: &[S]) -> TopicFilter {
        let mut parsed = Vec::with_capacity(patterns.len());
        for pattern in patterns {
            let tokens: Vec<String> = pattern.as_ref().split('.').map(str::to_string).collect();
            parsed.push(tokens);
        }
        TopicFilter { patterns: parsed }
    }

    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|tokens| tokens.join("."))
            .collect()
    }

    pub fn matches(&self, topic: &str) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        let topic_tokens: Vec<&str> = topic.split('.').collect();
        self.patterns
            .iter()
            .any(|pattern| pattern_matches(pattern, &topic_tokens))
    }
}

fn pattern_matches(pattern: &[String], topic: &[&str]) -> bool {
    for (index, pattern_token) in pattern.iter().enumerate() {
        if pattern_token == ">" {
            return topic.len() > index;
        }
        let Some(topic_token) = topic.get(index) else {
            return false;
        };
        if pattern_token != "*" && pattern_token != topic_token {
            return false;
        }
    }
    pattern.len() == topic.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_behave_like_nats() {
        let filter = TopicFilter::new(&["org.fedoraproject.*.buildsys.>", "exact.topic"]);
        assert!(filter.matches("org.fedoraproject.prod.buildsys.build.state.change"));
        assert!(filter.matches("org.fedoraproject.stg.buildsys.tag"));
        assert!(!filter.matches("org.fedoraproject.prod.buildsys"));
        assert!(!filter.matches("org.fedoraproject.prod.bodhi.update"));
        assert!(filter.matches("exact.topic"));
        assert!(!filter.matches("exact.topic.more"));
        assert!(TopicFilter::all().matches("anything"));
    }
}
