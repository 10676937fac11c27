//! The plugins a worker runs: the built-in ones (one file per family) and the declarative ones
//! from the config file.

mod builtin;
pub mod declarative;
mod pagure;
mod releng;
mod releng_logs;
mod statscache_rows;

use std::collections::HashSet;

use statscache_shared::config::WorkerConfig;

use crate::plugin::Plugin;
use declarative::{DeclarativePlugin, DefinitionError};

/// The built-in plugins not disabled, then the declarative ones, checked for clashing identifiers.
pub fn load(config: &WorkerConfig) -> Result<Vec<Box<dyn Plugin>>, DefinitionError> {
    let mut plugins = builtin::builtin_plugins(&config.disabled_plugins);
    for definition in &config.plugins {
        plugins.push(Box::new(DeclarativePlugin::from_config(definition)?));
    }
    let mut seen = HashSet::new();
    for plugin in &plugins {
        let identifier = &plugin.info().identifier;
        if !seen.insert(identifier.clone()) {
            return Err(DefinitionError {
                plugin: plugin.info().name.clone(),
                problem: format!("identifier {identifier:?} is already used by another plugin"),
            });
        }
    }
    Ok(plugins)
}

/// Why [`choose`] found no plugins.
#[derive(Debug, thiserror::Error)]
pub enum ChooseError {
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error("no plugin {0:?} in this configuration (see `statscache-worker plugins`)")]
    Unknown(String),
}

/// The plugins of `config` named in `names` (an operator command's `--plugin`), all of them if
/// it is empty.
pub fn choose(
    config: &WorkerConfig,
    names: &[String],
) -> Result<Vec<Box<dyn Plugin>>, ChooseError> {
    let mut chosen = Vec::new();
    for plugin in load(config)? {
        if names.is_empty() || names.contains(&plugin.info().identifier) {
            chosen.push(plugin);
        }
    }
    for wanted in names {
        let found = chosen
            .iter()
            .any(|plugin| &plugin.info().identifier == wanted);
        if !found {
            return Err(ChooseError::Unknown(wanted.clone()));
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use statscache_shared::config::Config;

    #[test]
    fn builtins_have_the_statscache_identifiers() {
        let plugins = load(&Config::defaults().worker).unwrap();
        let identifiers: Vec<&str> = plugins
            .iter()
            .map(|p| p.info().identifier.as_str())
            .collect();
        assert_eq!(
            identifiers,
            [
                "volume",
                "volume-by-category",
                "volume-by-topic",
                "volume-by-user",
                "volume-by-package",
                "pagure-contributions",
                "pagure-contributions-by-user",
                "pagure-contributions-by-project",
                "releng-dashboard",
                "release-engineering-event-logs",
                "statscache-rows"
            ]
        );
    }
}
