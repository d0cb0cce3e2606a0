//! Compiling a matcher's formats, and on a reload reusing what the previous matcher compiled.
//!
//! Compiling dominates building a matcher, and a periodic refresh changes few aliases, so
//! [`Matcher::rebuild`] copies every format whose string is unchanged instead of compiling it.
//! Kept apart because its only contract is invisible: a rebuilt matcher must equal a fresh
//! build, which its property test checks.

use std::collections::HashMap;

use super::{Matcher, to_u32};
use crate::format::{self, FormatError, FormatView, PackedFormat};
use crate::pyre::arena::{Arena, FastMap};

/// Compiles `formats` in order into `arena`; formats that `previous` (the matcher being
/// replaced) already holds are copied from it instead.
///
/// A multi-threaded version was measured: on the shared two-core machines it gained nothing
/// under load and cost several MiB of resident memory (per-thread allocator arenas), so this
/// stays sequential.
pub(super) fn compile_all(
    sources: &[&str],
    arena: &mut Arena,
    previous: Option<&Matcher>,
) -> (Vec<PackedFormat>, HashMap<u32, FormatError>, usize) {
    let mut previous = previous.map(Previous::new);
    let mut reused = 0;
    let mut copier = format::Copier::default();
    let mut scratch = format::CompileScratch::default();
    let mut formats = Vec::with_capacity(sources.len());
    let mut errors = HashMap::new();
    for (i, source) in sources.iter().enumerate() {
        if let Some(prev) = &mut previous
            && let Some(view) = prev.find(source)
        {
            formats.push(copier.copy(view, arena));
            reused += 1;
            continue;
        }
        match format::compile_into(source, arena, &mut scratch) {
            Ok(packed) => formats.push(packed),
            Err(e) => {
                formats.push(PackedFormat::default());
                errors.insert(to_u32(i), e);
            }
        }
    }
    arena.finish();
    (formats, errors, reused)
}

/// Finds format strings among the compiled formats of the matcher being replaced.
///
/// A refreshed alias list nearly always comes in the same order with a few aliases edited,
/// added or removed, so formats are looked for first at the previous matcher's next format and
/// a few after it (which skips removed ones); a string not found there is treated as new. Only
/// when that keeps failing (a reordered list) is a hash index of all previous formats built.
/// Either way a format is only ever taken from the previous matcher when its string is equal.
struct Previous<'a> {
    matcher: &'a Matcher,
    /// Per previous slot: whether it compiled and is used (failed formats are compiled again,
    /// which reproduces their error).
    usable: Vec<bool>,
    /// The previous slot expected next.
    cursor: usize,
    /// Consecutive strings not found near the cursor.
    misses: usize,
    index: Option<FastMap<&'a str, u32>>,
}

impl<'a> Previous<'a> {
    /// How far past the cursor to look.
    const WINDOW: usize = 16;
    /// Misses in a row after which the hash index is built.
    const MISSES_BEFORE_INDEX: usize = 32;

    fn new(matcher: &'a Matcher) -> Self {
        let mut usable = vec![false; matcher.formats.len()];
        for entry in &matcher.entries {
            usable[entry.format as usize] = true;
        }
        Self {
            matcher,
            usable,
            cursor: 0,
            misses: 0,
            index: None,
        }
    }

    fn view(&self, slot: usize) -> FormatView<'a> {
        FormatView::new(&self.matcher.arena, &self.matcher.formats[slot])
    }

    /// The previous matcher's compiled format for `source`, if it has one.
    fn find(&mut self, source: &str) -> Option<FormatView<'a>> {
        let end = (self.cursor + Self::WINDOW).min(self.usable.len());
        let near = (self.cursor..end).find(|&k| self.usable[k] && self.view(k).source() == source);
        let found = match near {
            Some(k) => Some(k),
            None if self.index.is_some() || self.misses >= Self::MISSES_BEFORE_INDEX => {
                let index = self.index.get_or_insert_with(|| {
                    let mut index = FastMap::default();
                    index.reserve(self.usable.len());
                    for (k, _) in self.usable.iter().enumerate().filter(|(_, u)| **u) {
                        let view = FormatView::new(&self.matcher.arena, &self.matcher.formats[k]);
                        index.insert(view.source(), to_u32(k));
                    }
                    index
                });
                index.get(source).map(|&k| k as usize)
            }
            None => None,
        };
        match found {
            Some(k) => {
                self.cursor = k + 1;
                self.misses = 0;
                Some(self.view(k))
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{alias, snapshot};
    use super::*;
    use crate::model::Alias;

    /// Format items of every kind the matcher handles differently: plain and regex formats,
    /// objects with several representations, display-only and `match_multiple` objects,
    /// formats that fail to compile or lack a default's group, and strings shared by aliases.
    const FORMAT_POOL: &[&str] = &[
        r#""run {{cmd}} on {{hosts}}""#,
        r#""run {{cmd}}""#,
        r#""pack get {{ pack }}""#,
        r#""deploy {{app}} to {{env=staging}}""#,
        r#""scale {{app=web}} to {{count=2}} in {{region='eu west'}}""#,
        r#"{"display": "run <cmd>", "representation": ["(run|execute) {{cmd}}( on {{hosts=localhost}})?[!.]?"]}"#,
        r#"{"display": "pack install <pack>", "representation": ["pack install {{ packs }}", "pack add {{ packs }}"]}"#,
        r#"{"display": "fixes <k>", "representation": ["(?:\\b|^)fixes (?P<k>[A-Z]+-[0-9]+)(?:\\b|$)"], "match_multiple": true}"#,
        r#"{"display": "help me"}"#,
        r#""status""#,
        r#""(?i:hey) {{greeting}}""#,
        r#""run {{my-param}}""#,
        r#""go {{a=x\ny}}""#,
        r#""say {{msg}} to {{who=\"all of you\"}}""#,
        r#"42"#,
        r#""""#,
    ];

    fn pool_alias(i: usize, formats: &[usize], enabled: bool) -> Alias {
        let formats: Vec<&str> = formats.iter().map(|&f| FORMAT_POOL[f]).collect();
        alias(&format!(
            r#"{{"name": "a{i}", "pack": "p{}", "enabled": {enabled}, "formats": [{}]}}"#,
            i % 3,
            formats.join(", ")
        ))
    }

    /// Commands that reach each kind of format above.
    const COMMANDS: &[&str] = &[
        "run date on web1",
        "run date",
        "execute date on web1!",
        "pack get st2",
        "pack add x",
        "deploy app to prod",
        "deploy app",
        "scale to",
        "scale api to 3",
        "x fixes AB-1 and fixes CD-2",
        "",
        "status",
        "HEY there",
        "say hi to",
        "nothing at all",
    ];

    fn assert_same_as_fresh(previous: &Matcher, aliases: &[Alias]) {
        let fresh = Matcher::build(aliases);
        let rebuilt = previous.rebuild(aliases);
        assert_eq!(snapshot(&rebuilt), snapshot(&fresh));
        for command in COMMANDS {
            assert_eq!(
                rebuilt.match_command(command),
                fresh.match_command(command),
                "{command:?}"
            );
        }
    }

    /// An edit of an alias list between two reloads.
    #[derive(Clone, Debug)]
    enum Edit {
        Remove(usize),
        Insert(usize, Vec<usize>),
        Replace(usize, Vec<usize>),
        Toggle(usize),
        Swap(usize, usize),
        Reverse,
    }

    fn formats_strategy() -> impl proptest::strategy::Strategy<Value = Vec<usize>> {
        proptest::collection::vec(0..FORMAT_POOL.len(), 0..4)
    }

    fn edit_strategy() -> impl proptest::strategy::Strategy<Value = Edit> {
        use proptest::prelude::*;
        prop_oneof![
            3 => any::<usize>().prop_map(Edit::Remove),
            3 => (any::<usize>(), formats_strategy()).prop_map(|(i, f)| Edit::Insert(i, f)),
            3 => (any::<usize>(), formats_strategy()).prop_map(|(i, f)| Edit::Replace(i, f)),
            1 => any::<usize>().prop_map(Edit::Toggle),
            1 => (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Edit::Swap(i, j)),
            1 => Just(Edit::Reverse),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// `rebuild` after any edits gives exactly the matcher `build` gives.
        #[test]
        fn rebuild_equals_fresh_build(
            initial in proptest::collection::vec(formats_strategy(), 0..24),
            edits in proptest::collection::vec(edit_strategy(), 0..8),
        ) {
            let mut aliases: Vec<Alias> = initial
                .iter()
                .enumerate()
                .map(|(i, f)| pool_alias(i, f, true))
                .collect();
            let previous = Matcher::build(&aliases);
            let mut next_name = aliases.len();
            for edit in edits {
                let n = aliases.len();
                match edit {
                    Edit::Remove(i) if n > 0 => {
                        aliases.remove(i % n);
                    }
                    Edit::Insert(i, f) => {
                        aliases.insert(i % (n + 1), pool_alias(next_name, &f, true));
                        next_name += 1;
                    }
                    Edit::Replace(i, f) if n > 0 => {
                        let name = aliases[i % n].name.clone();
                        aliases[i % n] = pool_alias(next_name, &f, true);
                        aliases[i % n].name = name;
                        next_name += 1;
                    }
                    Edit::Toggle(i) if n > 0 => aliases[i % n].enabled ^= true,
                    Edit::Swap(i, j) if n > 0 => aliases.swap(i % n, j % n),
                    Edit::Reverse => aliases.reverse(),
                    _ => {}
                }
            }
            assert_same_as_fresh(&previous, &aliases);
        }
    }

    /// A list of `n` aliases whose formats are all distinct (three per alias, plain and not).
    fn distinct_aliases(n: usize, tag: &str) -> Vec<Alias> {
        (0..n)
            .map(|i| {
                alias(&format!(
                    r#"{{"name": "a{i}", "pack": "p", "formats": ["get {tag}{i} {{{{x}}}}", "(run|go) {tag}{i}( {{{{y=1}}}})?", {{"display": "d{tag}{i}", "representation": ["set {tag}{i} {{{{z}}}} to {{{{w}}}}"]}}]}}"#
                ))
            })
            .collect()
    }

    #[test]
    fn rebuild_reuses_unchanged_formats_and_compiles_the_rest() {
        let old = distinct_aliases(300, "w");
        let previous = Matcher::build(&old);
        assert_eq!(previous.reused_count(), 0);

        // Unchanged list: everything is reused.
        assert_same_as_fresh(&previous, &old);
        assert_eq!(previous.rebuild(&old).reused_count(), 900);

        // One alias in a hundred edited, one removed, one added.
        let mut new = old.clone();
        for i in (7..300).step_by(100) {
            new[i] = distinct_aliases(i + 1, "edited").pop().expect("one alias");
        }
        new.remove(150);
        new.insert(40, distinct_aliases(1, "added").remove(0));
        assert_same_as_fresh(&previous, &new);
        assert_eq!(previous.rebuild(&new).reused_count(), 900 - 9 - 3);

        // A large block removed and the list reversed: found through the hash index.
        let mut shuffled = old[120..].to_vec();
        shuffled.reverse();
        // Up to `MISSES_BEFORE_INDEX` formats are compiled before the index is built.
        assert_same_as_fresh(&previous, &shuffled);
        let reused = previous.rebuild(&shuffled).reused_count();
        assert!(reused >= 540 - Previous::MISSES_BEFORE_INDEX, "{reused}");
    }

    #[test]
    fn rebuild_compiles_previously_failed_formats_again() {
        let broken = [alias(
            r#"{"name": "bad", "pack": "p", "formats": ["run {{my-param}}", "go {{a=x\ny}}", "ok {{x}}"]}"#,
        )];
        let previous = Matcher::build(&broken);
        assert_eq!(previous.failures().len(), 2);
        let rebuilt = previous.rebuild(&broken);
        assert_eq!(rebuilt.failures(), previous.failures());
        assert_eq!(rebuilt.reused_count(), 1);
    }
}
