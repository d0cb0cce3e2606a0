//! The alias cache: what each room may run, kept fresh and kept on disk.
//!
//! StackStorm's enabled aliases are fetched page by page every `refresh_interval`, stored in
//! SQLite, and compiled into one [`Matcher`] per pack filter in use. A refresh builds the new
//! [`Catalog`] off the request path (on a blocking thread) and swaps it in with one pointer
//! write, so commands never wait for a refresh. On start the stored list is loaded before the
//! bridge serves anything, so help and matching work at once, even while StackStorm is down.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{
    alias::{Alias, Matcher},
    config::PackFilter,
    st2::St2Client,
    store::{self, Store},
};

/// The aliases of one pack filter, and their matcher.
#[derive(Debug)]
pub struct RoomView {
    /// The filter this view was built for.
    pub filter: PackFilter,
    /// The allowed, enabled aliases, in (pack, name) order; the matcher's indexes point here.
    pub aliases: Vec<Alias>,
    /// The compiled formats.
    pub matcher: Matcher,
}

/// An immutable snapshot of every alias and every view built from it.
#[derive(Debug, Default)]
pub struct Catalog {
    aliases: Vec<Alias>,
    views: HashMap<PackFilter, Arc<RoomView>>,
    /// When the list was fetched from StackStorm (unix ms).
    pub fetched_at: Option<i64>,
}

impl Catalog {
    /// Builds views for `filters` over `aliases` (enabled ones only). CPU-heavy for large lists:
    /// call it on a blocking thread.
    ///
    /// With `previous`, views for filters it already had reuse its compiled formats
    /// ([`Matcher::rebuild`]): a refresh where few aliases changed costs little.
    pub fn build(
        mut aliases: Vec<Alias>,
        filters: &[PackFilter],
        fetched_at: Option<i64>,
        previous: Option<&Catalog>,
    ) -> Catalog {
        aliases.retain(|a| a.enabled);
        aliases.sort_by(|a, b| (a.pack.as_deref(), &a.name).cmp(&(b.pack.as_deref(), &b.name)));
        let mut views = HashMap::new();
        for filter in filters {
            views.entry(filter.clone()).or_insert_with(|| {
                let old = previous
                    .and_then(|p| p.views.get(filter))
                    .map(|v| &v.matcher);
                Arc::new(build_view(&aliases, filter, old))
            });
        }
        Catalog {
            aliases,
            views,
            fetched_at,
        }
    }

    /// Every enabled alias.
    pub fn aliases(&self) -> &[Alias] {
        &self.aliases
    }

    /// The view for `filter`, if it was built.
    pub fn view(&self, filter: &PackFilter) -> Option<Arc<RoomView>> {
        self.views.get(filter).cloned()
    }

    /// The filters views exist for.
    pub fn filters(&self) -> Vec<PackFilter> {
        self.views.keys().cloned().collect()
    }
}

fn build_view(aliases: &[Alias], filter: &PackFilter, previous: Option<&Matcher>) -> RoomView {
    let allowed: Vec<Alias> = aliases
        .iter()
        .filter(|a| filter.allows(a.pack.as_deref().unwrap_or_default()))
        .cloned()
        .collect();
    let matcher = match previous {
        Some(old) => old.rebuild(&allowed),
        None => Matcher::build(&allowed),
    };
    RoomView {
        filter: filter.clone(),
        aliases: allowed,
        matcher,
    }
}

/// The current catalog, swapped whole on refresh.
#[derive(Debug, Default)]
pub struct AliasCache {
    current: RwLock<Arc<Catalog>>,
    /// Invalid formats already logged, so each is reported once, not every refresh.
    reported: std::sync::Mutex<HashSet<(String, String)>>,
}

impl AliasCache {
    /// The current snapshot.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The view for `filter`. Views for filters in use are built with the catalog; a filter
    /// first seen here (a room just narrowed to new packs) is built now and kept.
    pub fn view(&self, filter: &PackFilter) -> Arc<RoomView> {
        let catalog = self.catalog();
        if let Some(view) = catalog.view(filter) {
            return view;
        }
        let view = Arc::new(build_view(&catalog.aliases, filter, None));
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if Arc::ptr_eq(&current, &catalog) {
            let mut views = catalog.views.clone();
            views.insert(filter.clone(), view.clone());
            *current = Arc::new(Catalog {
                aliases: catalog.aliases.clone(),
                views,
                fetched_at: catalog.fetched_at,
            });
        }
        view
    }

    /// Swaps in a new catalog and logs (once each) the formats that do not compile.
    pub fn replace(&self, catalog: Catalog) {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        let mut invalid = 0usize;
        for view in catalog.views.values() {
            for failure in view.matcher.failures() {
                invalid += 1;
                if reported.insert((failure.alias_ref.clone(), failure.format.clone())) {
                    tracing::warn!(alias = %failure.alias_ref, format = %failure.format, reason = %failure.reason,
                        "alias format skipped: it does not compile (the other aliases are unaffected)");
                }
            }
        }
        drop(reported);
        metrics::gauge!("st2_matrix_aliases").set(catalog.aliases.len() as f64);
        metrics::gauge!("st2_matrix_alias_formats_invalid").set(invalid as f64);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(catalog);
    }
}

/// Parses alias objects, skipping (and logging) those that do not fit the schema.
pub fn parse_aliases(values: &[Value]) -> Vec<Alias> {
    values
        .iter()
        .filter_map(|value| match serde_json::from_value::<Alias>(value.clone()) {
            Ok(alias) => Some(alias),
            Err(e) => {
                let reference = value.get("ref").and_then(serde_json::Value::as_str).unwrap_or("?");
                tracing::warn!(alias = %reference, error.message = %e, "skipping an alias StackStorm returned in an unexpected shape");
                None
            }
        })
        .collect()
}

/// Loads the stored list into `cache` (at start, before serving).
pub async fn load_stored(
    cache: &AliasCache,
    store: &Store,
    filters: Vec<PackFilter>,
) -> anyhow::Result<usize> {
    let stored = store::aliases::all(store).await?;
    let fetched_at = store::aliases::fetched_at(store).await?;
    let values: Vec<Value> = stored
        .iter()
        .filter_map(|s| serde_json::from_str(&s.alias).ok())
        .collect();
    let aliases = parse_aliases(&values);
    let count = aliases.len();
    let catalog =
        tokio::task::spawn_blocking(move || Catalog::build(aliases, &filters, fetched_at, None))
            .await?;
    cache.replace(catalog);
    Ok(count)
}

/// Fetches the aliases once; stores and swaps them in when they changed. Returns the number of
/// enabled aliases.
pub async fn refresh_once(
    cache: &AliasCache,
    store: &Store,
    st2: &St2Client,
    default_filter: &PackFilter,
) -> Result<usize, anyhow::Error> {
    let started = Instant::now();
    let values = st2.list_aliases().await?;
    let enabled: Vec<Value> = values
        .into_iter()
        .filter(|v| v.get("enabled").and_then(Value::as_bool).unwrap_or(true))
        .collect();
    // Parsed one by one so each stored row keeps the JSON of its own alias (a malformed one is
    // skipped, and must not shift the pairing).
    let mut aliases = Vec::with_capacity(enabled.len());
    let mut rows: Vec<(String, String, String)> = Vec::with_capacity(enabled.len());
    for json in &enabled {
        if let Some(alias) = parse_aliases(std::slice::from_ref(json)).pop() {
            rows.push((
                alias.reference(),
                alias.pack.clone().unwrap_or_default(),
                json.to_string(),
            ));
            aliases.push(alias);
        }
    }
    let stored: Vec<String> = store::aliases::all(store)
        .await?
        .into_iter()
        .map(|s| s.alias)
        .collect();
    let mut incoming: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    let mut existing: Vec<&str> = stored.iter().map(String::as_str).collect();
    incoming.sort_unstable();
    existing.sort_unstable();
    let count = aliases.len();
    // Unchanged and already built from a fetched list: nothing to do. (A first fetch of an empty
    // list must still go through, so the catalog records that StackStorm answered.)
    let current = cache.catalog();
    if incoming == existing && !current.filters().is_empty() && current.fetched_at.is_some() {
        tracing::debug!(aliases = count, "alias list unchanged");
        return Ok(count);
    }
    store::aliases::replace_all(store, &rows).await?;
    let mut filters = current.filters();
    if !filters.contains(default_filter) {
        filters.push(default_filter.clone());
    }
    let fetched_at = Some(store::now_ms());
    let catalog = tokio::task::spawn_blocking(move || {
        Catalog::build(aliases, &filters, fetched_at, Some(&current))
    })
    .await?;
    cache.replace(catalog);
    tracing::info!(
        aliases = count,
        took_ms = started.elapsed().as_millis() as u64,
        "alias list refreshed"
    );
    Ok(count)
}

/// Refreshes every `interval` until `stop`; after a failure, retries sooner (StackStorm down
/// should not leave a stale list for a whole interval once it is back).
pub async fn run_refresh(
    cache: Arc<AliasCache>,
    store: Store,
    st2: St2Client,
    default_filter: PackFilter,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        match refresh_once(&cache, &store, &st2, &default_filter).await {
            Ok(_) => {
                if failures > 0 {
                    tracing::info!("StackStorm answers again; aliases refreshed");
                }
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                let stale = if cache.catalog().aliases.is_empty() {
                    "no aliases known yet"
                } else {
                    "using the cached aliases"
                };
                if failures == 1 {
                    tracing::warn!(error.message = %e, "cannot refresh the aliases ({stale}); will retry");
                } else {
                    tracing::debug!(error.message = %e, failures, "alias refresh still failing");
                }
            }
        }
        let wait = if failures == 0 {
            interval
        } else {
            interval.min(Duration::from_secs(2u64.pow(failures.min(4))))
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alias(pack: &str, name: &str, format: &str, enabled: bool) -> Alias {
        serde_json::from_value(json!({"name": name, "pack": pack, "ref": format!("{pack}.{name}"), "action_ref": "core.local",
            "formats": [format], "enabled": enabled}))
        .unwrap()
    }

    #[test]
    fn views_hold_only_allowed_enabled_aliases() {
        let catalog = Catalog::build(
            vec![
                alias("b", "x", "x {{a}}", true),
                alias("a", "y", "y", true),
                alias("a", "off", "off", false),
            ],
            &[PackFilter::all(), "a".parse().unwrap()],
            None,
            None,
        );
        assert_eq!(catalog.aliases().len(), 2);
        let all = catalog.view(&PackFilter::all()).unwrap();
        assert_eq!(
            all.aliases
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>(),
            ["y", "x"]
        );
        let only_a = catalog.view(&"a".parse().unwrap()).unwrap();
        assert_eq!(only_a.aliases.len(), 1);
    }

    #[test]
    fn a_view_for_a_new_filter_is_built_on_demand_and_kept() {
        let cache = AliasCache::default();
        cache.replace(Catalog::build(
            vec![alias("a", "y", "y", true), alias("b", "x", "x", true)],
            &[PackFilter::all()],
            None,
            None,
        ));
        let filter: PackFilter = "b".parse().unwrap();
        assert_eq!(cache.view(&filter).aliases.len(), 1);
        assert!(cache.catalog().view(&filter).is_some());
    }

    #[test]
    fn a_refresh_reuses_the_compiled_formats_of_its_filter() {
        let first = Catalog::build(
            vec![alias("a", "y", "y {{p}}", true)],
            &[PackFilter::all()],
            None,
            None,
        );
        let next = Catalog::build(
            vec![alias("a", "y", "y {{p}}", true), alias("b", "x", "x", true)],
            &[PackFilter::all()],
            None,
            Some(&first),
        );
        let view = next.view(&PackFilter::all()).unwrap();
        assert_eq!(view.matcher.reused_count(), 1);
        assert!(matches!(
            view.matcher.match_command("x"),
            crate::alias::MatchOutcome::Matched(_)
        ));
    }

    #[test]
    fn malformed_aliases_are_skipped() {
        let parsed = parse_aliases(&[
            json!({"name": "ok", "action_ref": "a.b", "formats": []}),
            json!({"formats": 5}),
        ]);
        assert_eq!(parsed.len(), 1);
    }
}
