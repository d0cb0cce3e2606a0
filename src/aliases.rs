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
use sha2::{Digest as _, Sha256};
use st2_alias::{Alias, Matcher};
use tokio_util::sync::CancellationToken;

use crate::{
    permissions::PackFilter,
    st2::St2Client,
    store::{self, Store},
};

/// What the bridge keeps of an alias once its formats are compiled: what help and acks need.
/// The alias's ref, name and format strings live in the view's [`Matcher`] already (matches
/// carry them, [`Matcher::patterns`] lists the formats), so they are not copied here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasEntry {
    /// The pack.
    pub pack: Box<str>,
    /// The action it runs (`pack.name`): what a command in doubt is looked up by.
    pub action_ref: Box<str>,
    /// The description, for help.
    pub description: Option<Box<str>>,
    /// `ack.enabled` is not false.
    pub ack_enabled: bool,
    /// `ack.append_url` is not false.
    pub ack_append_url: bool,
    /// Help strings (display strings and plain formats; display-only formats included, as in
    /// StackStorm's help).
    pub displays: Box<[Box<str>]>,
}

impl From<&Alias> for AliasEntry {
    fn from(alias: &Alias) -> Self {
        AliasEntry {
            pack: alias.pack.as_deref().unwrap_or_default().into(),
            action_ref: alias.action_ref.as_str().into(),
            description: alias.description.as_deref().map(Into::into),
            ack_enabled: alias.ack.is_enabled(),
            ack_append_url: alias.ack.append_url != Some(false),
            displays: alias
                .display_strings()
                .into_iter()
                .map(Into::into)
                .collect(),
        }
    }
}

/// The aliases of one pack filter, and their matcher.
#[derive(Debug)]
pub struct RoomView {
    /// The filter this view was built for.
    pub filter: PackFilter,
    /// The allowed, enabled aliases, in (pack, name) order; the matcher's indexes point here.
    /// Shared with the catalog when the filter allows every pack.
    pub aliases: Arc<Vec<AliasEntry>>,
    /// The compiled formats.
    pub matcher: Matcher,
}

/// An immutable snapshot of every alias and every view built from it.
#[derive(Debug, Default)]
pub struct Catalog {
    aliases: Arc<Vec<AliasEntry>>,
    views: HashMap<PackFilter, Arc<RoomView>>,
    /// When the list was fetched from StackStorm (unix ms).
    pub fetched_at: Option<i64>,
}

impl Catalog {
    /// Formats that do not compile, each counted once (a format fails in every pack view
    /// that includes its alias).
    pub fn invalid_formats(&self) -> usize {
        let failures = self.views.values().flat_map(|v| v.matcher.failures());
        failures
            .map(|f| (&f.alias_ref, &f.format))
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// Builds views for `filters` over `aliases` (enabled ones only). CPU-heavy for large lists:
    /// call it on a blocking thread. The full alias objects are needed only here; the catalog
    /// keeps [`AliasEntry`]s.
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
        let entries: Arc<Vec<AliasEntry>> =
            Arc::new(aliases.iter().map(AliasEntry::from).collect());
        let mut views = HashMap::new();
        for filter in filters {
            views.entry(filter.clone()).or_insert_with(|| {
                let old = previous
                    .and_then(|p| p.views.get(filter))
                    .map(|v| &v.matcher);
                Arc::new(build_view(&aliases, &entries, filter, old))
            });
        }
        Catalog {
            aliases: entries,
            views,
            fetched_at,
        }
    }

    /// Every enabled alias.
    pub fn aliases(&self) -> &[AliasEntry] {
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

/// A view over `aliases` (whose entries are `entries`, same order) for `filter`.
fn build_view(
    aliases: &[Alias],
    entries: &Arc<Vec<AliasEntry>>,
    filter: &PackFilter,
    previous: Option<&Matcher>,
) -> RoomView {
    let (allowed, allowed_entries) = if *filter == PackFilter::all() {
        (aliases.to_vec(), entries.clone())
    } else {
        let keep: Vec<usize> = (0..aliases.len())
            .filter(|&i| filter.allows(aliases[i].pack.as_deref().unwrap_or_default()))
            .collect();
        (
            keep.iter().map(|&i| aliases[i].clone()).collect(),
            Arc::new(keep.iter().map(|&i| entries[i].clone()).collect()),
        )
    };
    let matcher = match previous {
        Some(old) => old.rebuild(&allowed),
        None => Matcher::build(&allowed),
    };
    RoomView {
        filter: filter.clone(),
        aliases: allowed_entries,
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

    /// The view for `filter`. Every filter in use has one (built with the catalog, or by
    /// [`AliasCache::ensure_view`] when a room gets a new filter); a filter without one gets an
    /// empty view: allowing nothing is the safe answer.
    pub fn view(&self, filter: &PackFilter) -> Arc<RoomView> {
        self.catalog().view(filter).unwrap_or_else(|| {
            tracing::error!(packs = %filter, "no alias view for this pack filter; nothing is allowed until the next refresh");
            Arc::new(RoomView { filter: filter.clone(), aliases: Arc::default(), matcher: Matcher::build(&[]) })
        })
    }

    /// Builds the view for `filter` from the stored aliases, unless it exists.
    pub async fn ensure_view(&self, store: &Store, filter: &PackFilter) -> anyhow::Result<()> {
        if self.catalog().view(filter).is_some() {
            return Ok(());
        }
        let aliases = stored_aliases(store).await?;
        let filter_owned = filter.clone();
        let built = tokio::task::spawn_blocking(move || {
            Catalog::build(aliases, std::slice::from_ref(&filter_owned), None, None)
        })
        .await?;
        let Some(view) = built.view(filter) else {
            return Ok(());
        };
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let mut views = current.views.clone();
        views.insert(filter.clone(), view);
        *current = Arc::new(Catalog {
            aliases: current.aliases.clone(),
            views,
            fetched_at: current.fetched_at,
        });
        Ok(())
    }

    /// Swaps in a new catalog and logs (once each) the formats that do not compile.
    pub fn replace(&self, catalog: Catalog) {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        for view in catalog.views.values() {
            for failure in view.matcher.failures() {
                if reported.insert((failure.alias_ref.clone(), failure.format.clone())) {
                    tracing::warn!(alias = %failure.alias_ref, format = %failure.format, reason = %failure.reason,
                        "alias format skipped: it does not compile (the other aliases are unaffected)");
                }
            }
        }
        drop(reported);
        metrics::gauge!("st2_matrix_aliases").set(catalog.aliases.len() as f64);
        metrics::gauge!("st2_matrix_alias_formats_invalid").set(catalog.invalid_formats() as f64);
        let previous = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(catalog),
        );
        drop(previous);
        // A refresh of ten thousand aliases allocates tens of MiB that are freed moments
        // later: without this the process would stay at its refresh peak for good.
        crate::memory::release_freed();
    }
}

/// Every stored alias, parsed.
async fn stored_aliases(store: &Store) -> anyhow::Result<Vec<Alias>> {
    Ok(store::aliases::all(store)
        .await?
        .iter()
        .filter_map(|s| parse_alias(&s.alias))
        .collect())
}

/// Parses one alias from its JSON, keeping only what the bridge reads; `None` (logged) when
/// it does not fit the schema.
pub fn parse_alias(json: &str) -> Option<Alias> {
    match serde_json::from_str::<Alias>(json) {
        Ok(alias) => Some(slim(alias)),
        Err(e) => {
            let reference = serde_json::from_str::<Value>(json)
                .ok()
                .and_then(|v| v.get("ref").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| "?".into());
            tracing::warn!(alias = %reference, error.message = %e, "skipping an alias StackStorm returned in an unexpected shape");
            None
        }
    }
}

/// Drops what the bridge never reads (StackStorm renders acks and results itself; ids, extra
/// maps and immutable parameters stay on the server), so ten thousand aliases stay small.
fn slim(mut alias: Alias) -> Alias {
    if alias.reference.is_none() {
        alias.reference = Some(alias.reference());
    }
    alias.id = None;
    alias.uid = None;
    alias.metadata_file = None;
    alias.extra = Default::default();
    alias.immutable_parameters = Default::default();
    alias.result = Default::default();
    alias.ack.format = None;
    alias.ack.extra = Default::default();
    alias.description = alias.description.map(|mut d| {
        d.shrink_to_fit();
        d
    });
    alias
}

/// Loads the stored list into `cache` (at start, before serving).
pub async fn load_stored(
    cache: &AliasCache,
    store: &Store,
    filters: Vec<PackFilter>,
) -> anyhow::Result<usize> {
    let fetched_at = store::aliases::fetched_at(store).await?;
    let aliases = stored_aliases(store).await?;
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
    let pages = st2.list_aliases().await?;
    // Parsed one by one so each stored row keeps the JSON of its own alias (a malformed one is
    // skipped and must not shift the pairing); raw JSON, never a `Value` tree per alias.
    let mut aliases = Vec::with_capacity(pages.len());
    let mut rows: Vec<(String, String, String)> = Vec::with_capacity(pages.len());
    let mut digest = Sha256::new();
    for raw in &pages {
        let Some(alias) = parse_alias(raw.get()) else {
            continue;
        };
        if !alias.enabled {
            continue;
        }
        digest.update(raw.get().as_bytes());
        digest.update(b"\n");
        rows.push((
            alias.reference(),
            alias.pack.clone().unwrap_or_default(),
            raw.get().to_owned(),
        ));
        aliases.push(alias);
    }
    drop(pages);
    let digest: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let count = aliases.len();
    // Unchanged and already built from a fetched list: nothing to do. (A first fetch of an empty
    // list must still go through, so the catalog records that StackStorm answered.)
    let current = cache.catalog();
    let unchanged = store::settings::meta(store, "aliases_digest")
        .await?
        .as_deref()
        == Some(digest.as_str());
    if unchanged && !current.filters().is_empty() && current.fetched_at.is_some() {
        tracing::debug!(aliases = count, "alias list unchanged");
        return Ok(count);
    }
    store::aliases::replace_all(store, &rows).await?;
    store::settings::set_meta(store, "aliases_digest", &digest).await?;
    drop(rows);
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
            interval.min(crate::retry::delay(
                Duration::from_secs(2),
                Duration::from_secs(16),
                failures,
            ))
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
            all.aliases.iter().map(|a| &*a.pack).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let only_a = catalog.view(&"a".parse().unwrap()).unwrap();
        assert_eq!(only_a.aliases.len(), 1);
    }

    #[test]
    fn a_broken_format_counts_once_whatever_the_views() {
        let catalog = Catalog::build(
            vec![
                alias("a", "bad", "deploy {{my-app}}", true),
                alias("a", "ok", "ok", true),
            ],
            &[PackFilter::all(), "a".parse().unwrap()],
            None,
            None,
        );
        assert_eq!(
            catalog
                .view(&PackFilter::all())
                .unwrap()
                .matcher
                .failures()
                .len(),
            1
        );
        assert_eq!(
            catalog
                .view(&"a".parse().unwrap())
                .unwrap()
                .matcher
                .failures()
                .len(),
            1
        );
        assert_eq!(catalog.invalid_formats(), 1);
    }

    #[tokio::test]
    async fn a_view_for_a_new_filter_is_built_from_the_store_and_kept() {
        let store = Store::in_memory().await.unwrap();
        let json = |pack: &str, name: &str| {
            json!({"name": name, "pack": pack, "ref": format!("{pack}.{name}"), "formats": [name], "enabled": true}).to_string()
        };
        let rows = vec![
            ("a.y".to_owned(), "a".to_owned(), json("a", "y")),
            ("b.x".to_owned(), "b".to_owned(), json("b", "x")),
        ];
        store::aliases::replace_all(&store, &rows).await.unwrap();
        let cache = AliasCache::default();
        load_stored(&cache, &store, vec![PackFilter::all()])
            .await
            .unwrap();
        let filter: PackFilter = "b".parse().unwrap();
        assert!(
            cache.view(&filter).aliases.is_empty(),
            "an unknown filter allows nothing"
        );
        cache.ensure_view(&store, &filter).await.unwrap();
        assert_eq!(cache.view(&filter).aliases.len(), 1);
        assert_eq!(
            cache.catalog().aliases().len(),
            2,
            "the catalog's own list is untouched"
        );
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
            st2_alias::MatchOutcome::Matched(_)
        ));
    }

    #[test]
    fn malformed_aliases_are_skipped() {
        let parsed: Vec<Alias> = [
            json!({"name": "ok", "action_ref": "a.b", "formats": []}),
            json!({"formats": 5}),
        ]
        .iter()
        .filter_map(|v| parse_alias(&v.to_string()))
        .collect();
        assert_eq!(parsed.len(), 1);
    }

    #[test]
    fn what_the_bridge_does_not_read_is_dropped() {
        let alias = parse_alias(
            &json!({"name": "n", "pack": "p", "formats": ["x"], "id": "5e", "result": {"format": "a long template"},
                    "ack": {"format": "rendered by st2", "append_url": false}, "extra": {"slack": {}}})
            .to_string(),
        )
        .unwrap();
        assert_eq!(
            (alias.reference.as_deref(), alias.id.as_deref()),
            (Some("p.n"), None)
        );
        assert_eq!(alias.result.format, None);
        assert_eq!(
            (alias.ack.format.as_deref(), alias.ack.append_url),
            (None, Some(false))
        );
        assert!(alias.extra.is_empty());
    }
}
