//! The log subscriber, with a level a reload can change (`general.log_level`).
//!
//! A plain level (`info`, `debug`, ...) is answered per call site once and
//! cached by `tracing` (always / never), exactly as a static `LevelFilter`
//! is: nothing is asked per event, and nothing is locked when a session's
//! span is entered on every poll. A filter directive string
//! (`info,pgdog_router::backend=debug`) goes to an `EnvFilter`; its span
//! hooks are forwarded only when it has span-field directives (`[span{..}]`),
//! the one case that needs them.
//!
//! `tracing_subscriber::reload` is not used: its layer takes a read lock on
//! every span enter and exit, on every thread, which is every poll of every
//! session. Here a change rebuilds the call sites' cached interest instead
//! (`tracing::callsite::rebuild_interest_cache`), which is what makes the new
//! level take effect.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{span, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// A parsed `general.log_level`.
pub enum Filter {
    Level(LevelFilter),
    Directives(Box<EnvFilter>),
}

impl Filter {
    /// A level name (any case), or an `EnvFilter` directive string.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let text = text.trim();
        if let Ok(level) = text.parse::<LevelFilter>() {
            return Ok(Filter::Level(level));
        }
        EnvFilter::builder()
            .parse(text)
            .map(|f| Filter::Directives(Box::new(f)))
            .map_err(|e| format!("general.log_level {text:?} is not a level or filter directive: {e}"))
    }

    /// Whether the filter looks at span fields, and so must see spans.
    fn dynamic(&self, text: &str) -> bool {
        matches!(self, Filter::Directives(_)) && text.contains('[')
    }
}

struct State {
    filter: Filter,
    text: String,
}

/// Changes the level of the subscriber `init` installed.
#[derive(Clone)]
pub struct LogLevel {
    state: Arc<RwLock<State>>,
    /// Read on every span hook without taking the lock.
    dynamic: Arc<AtomicBool>,
}

impl LogLevel {
    /// The `general.log_level` text in force.
    pub fn current(&self) -> String {
        self.state.read().map(|s| s.text.clone()).unwrap_or_default()
    }

    /// Puts a parsed filter in force; `text` is what it was parsed from.
    pub fn set(&self, filter: Filter, text: &str) {
        let dynamic = filter.dynamic(text);
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            *state = State { filter, text: text.trim().to_string() };
            self.dynamic.store(dynamic, Ordering::Release);
        }
        // Outside the lock: this asks the layer about every call site again.
        tracing::callsite::rebuild_interest_cache();
    }
}

/// Installs the global subscriber (plain format, no targets) at `level`; an
/// unparsable level falls back to `info` (the config loader has already
/// refused those). Returns the handle a reload changes the level with.
pub fn init(level: &str) -> LogLevel {
    let (filter, text) = match Filter::parse(level) {
        Ok(f) => (f, level.trim().to_string()),
        Err(_) => (Filter::Level(LevelFilter::INFO), "info".to_string()),
    };
    let handle = LogLevel {
        dynamic: Arc::new(AtomicBool::new(filter.dynamic(&text))),
        state: Arc::new(RwLock::new(State { filter, text })),
    };
    let layer = ReloadableFilter { state: handle.state.clone(), dynamic: handle.dynamic.clone() };
    // Ignored when a subscriber is already installed (tests).
    let _ =
        tracing_subscriber::registry().with(layer).with(tracing_subscriber::fmt::layer().with_target(false)).try_init();
    handle
}

/// The filtering layer behind [`LogLevel`].
struct ReloadableFilter {
    state: Arc<RwLock<State>>,
    dynamic: Arc<AtomicBool>,
}

impl ReloadableFilter {
    fn with<R>(&self, f: impl FnOnce(&Filter) -> R) -> R {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        f(&state.filter)
    }

    fn dynamic(&self) -> bool {
        self.dynamic.load(Ordering::Acquire)
    }
}

impl<S: Subscriber> Layer<S> for ReloadableFilter {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.with(|f| match f {
            Filter::Level(level) if metadata.level() <= level => Interest::always(),
            Filter::Level(_) => Interest::never(),
            Filter::Directives(env) => Layer::<S>::register_callsite(env.as_ref(), metadata),
        })
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.with(|f| match f {
            Filter::Level(level) => metadata.level() <= level,
            Filter::Directives(env) => Layer::<S>::enabled(env.as_ref(), metadata, ctx),
        })
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.with(|f| match f {
            Filter::Level(level) => Some(*level),
            Filter::Directives(env) => Layer::<S>::max_level_hint(env.as_ref()),
        })
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if self.dynamic() {
            self.with(|f| {
                if let Filter::Directives(env) = f {
                    Layer::<S>::on_new_span(env.as_ref(), attrs, id, ctx);
                }
            });
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if self.dynamic() {
            self.with(|f| {
                if let Filter::Directives(env) = f {
                    Layer::<S>::on_record(env.as_ref(), id, values, ctx);
                }
            });
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        if self.dynamic() {
            self.with(|f| {
                if let Filter::Directives(env) = f {
                    Layer::<S>::on_enter(env.as_ref(), id, ctx);
                }
            });
        }
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        if self.dynamic() {
            self.with(|f| {
                if let Filter::Directives(env) = f {
                    Layer::<S>::on_exit(env.as_ref(), id, ctx);
                }
            });
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        if self.dynamic() {
            self.with(|f| {
                if let Filter::Directives(env) = f {
                    Layer::<S>::on_close(env.as_ref(), id, ctx);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_parse() {
        assert!(matches!(Filter::parse("WARN"), Ok(Filter::Level(LevelFilter::WARN))));
        assert!(matches!(Filter::parse(" debug "), Ok(Filter::Level(LevelFilter::DEBUG))));
        let f = Filter::parse("info,pgdog_router=debug").unwrap();
        assert!(matches!(f, Filter::Directives(_)));
        assert!(!f.dynamic("info,pgdog_router=debug"));
        let f = Filter::parse("info,[client{user=app}]=debug").unwrap();
        assert!(f.dynamic("info,[client{user=app}]=debug"));
        assert!(Filter::parse("info,pgdog_router=loud").is_err());
    }
}
