//! Matcher behaviour on StackStorm's own alias fixtures (formats of
//! `shared/reference/st2-aliases-real.json`, templates trimmed), following st2's
//! `/api/v1/actionalias/match` rules.

use st2_alias::{Alias, FormatSpec, MatchOutcome, MatchParams, Matcher};

const ALIASES: &str = r###"[
 {
  "name": "remote_shell_cmd",
  "pack": "examples",
  "ref": "examples.remote_shell_cmd",
  "description": "Execute a command on a remote host via SSH.",
  "enabled": true,
  "action_ref": "core.remote",
  "formats": [
   "run {{cmd}} on {{hosts}}"
  ]
 },
 {
  "name": "greet",
  "pack": "hello_st2",
  "ref": "hello_st2.greet",
  "description": "Greet StackStorm",
  "enabled": true,
  "action_ref": "hello_st2.greet",
  "formats": [
   "greet {{greeting}}"
  ]
 },
 {
  "name": "pack_get",
  "pack": "packs",
  "ref": "packs.pack_get",
  "description": "Get information about installed StackStorm pack.",
  "enabled": true,
  "action_ref": "packs.get",
  "formats": [
   {
    "display": "pack get <pack>",
    "representation": [
     "pack get {{ pack }}"
    ]
   }
  ]
 },
 {
  "name": "pack_install",
  "pack": "packs",
  "ref": "packs.pack_install",
  "description": "Install/upgrade StackStorm packs.",
  "enabled": true,
  "action_ref": "packs.install",
  "formats": [
   {
    "display": "pack install <pack_name|git_url>[,<pack_name|git_url>]",
    "representation": [
     "pack install {{ packs }}"
    ]
   }
  ]
 },
 {
  "name": "pack_search",
  "pack": "packs",
  "ref": "packs.pack_search",
  "description": "Search for packs in StackStorm Exchange and other directories.",
  "enabled": true,
  "action_ref": "packs.search",
  "formats": [
   {
    "display": "pack search <query>",
    "representation": [
     "pack search {{ query }}"
    ]
   }
  ]
 },
 {
  "name": "pack_show",
  "pack": "packs",
  "ref": "packs.pack_show",
  "description": "Show information about the pack from StackStorm Exchange.",
  "enabled": true,
  "action_ref": "packs.show",
  "formats": [
   {
    "display": "pack show <pack>",
    "representation": [
     "pack show {{ pack }}"
    ]
   }
  ]
 },
 {
  "name": "alias1",
  "pack": "aliases",
  "ref": "aliases.alias1",
  "description": "DON'T CARE",
  "enabled": true,
  "action_ref": "wolfpack.action1",
  "formats": [
   "Lorem ipsum {{param1}} dolor sit {{param2}} amet."
  ]
 },
 {
  "name": "alias2",
  "pack": "aliases",
  "ref": "aliases.alias2",
  "description": "DON'T CARE",
  "enabled": true,
  "action_ref": "wolfpack.action1",
  "formats": [
   {
    "display": "Help entry doesn't matter.",
    "representation": [
     "Lorem ipsum {{param1}} dolor sit {{param3}} amet."
    ]
   }
  ]
 },
 {
  "name": "alias3",
  "pack": "aliases",
  "ref": "aliases.alias3",
  "description": "DON'T CARE",
  "enabled": true,
  "action_ref": "core.remote",
  "formats": [
   "format1",
   "format2"
  ]
 },
 {
  "name": "alias4",
  "pack": "aliases",
  "ref": "aliases.alias4",
  "description": "DON'T CARE",
  "enabled": true,
  "action_ref": "wolfpack.action1",
  "formats": [
   {
    "display": "Help entry doesn't matter.",
    "representation": [
     "Lorem ipsum {{param1}} dolor sit {{param4}} amet."
    ]
   }
  ]
 },
 {
  "name": "alias5",
  "pack": "aliases",
  "ref": "aliases.alias5",
  "description": "Static test",
  "enabled": true,
  "action_ref": "wolfpack.action1",
  "formats": [
   "lorem ipsum"
  ],
  "immutable_parameters": {
   "param1": "value1",
   "param2": "value2"
  }
 },
 {
  "name": "alias_match_multiple_fixes1",
  "pack": "aliases",
  "ref": "aliases.alias_match_multiple_fixes1",
  "description": "DON'T CARE",
  "enabled": true,
  "action_ref": "wolfpack.action2",
  "formats": [
   {
    "display": "fixes <issue_key>",
    "representation": [
     "(?:\\b|^)fixes (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)(?:\\b|$)"
    ],
    "match_multiple": true
   }
  ]
 },
 {
  "name": "alias_match_multiple_fixes2",
  "pack": "aliases",
  "ref": "aliases.alias_match_multiple_fixes2",
  "description": "DON'T CARE",
  "enabled": true,
  "action_ref": "wolfpack.action2",
  "formats": [
   {
    "display": "fixes <issue_key>",
    "representation": [
     "(?:\\b|^)fixes (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)(?:\\b|$)"
    ],
    "match_multiple": true
   }
  ]
 },
 {
  "name": "alias_match_multiple",
  "pack": "aliases",
  "ref": "aliases.alias_match_multiple",
  "description": "DON'T CARE",
  "enabled": true,
  "action_ref": "wolfpack.action2",
  "formats": [
   {
    "display": "duplicate of <issue_key>",
    "representation": [
     "(?:\\b|^)duplicate of (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)(?:\\b|$)"
    ],
    "match_multiple": true
   }
  ]
 },
 {
  "name": "alias_with_immutable_list_param",
  "pack": "aliases",
  "ref": "aliases.alias_with_immutable_list_param",
  "description": "DON'T CARE",
  "enabled": true,
  "action_ref": "wolfpack.action3",
  "formats": [
   "test alias foo"
  ],
  "immutable_parameters": {
   "array_param": [
    {
     "key1": "one",
     "key2": "two"
    },
    {
     "key3": "three",
     "key4": "four"
    }
   ]
  }
 },
 {
  "name": "alias_with_immutable_list_param_str_cast",
  "pack": "aliases",
  "ref": "aliases.alias_with_immutable_list_param_str_cast",
  "description": "DON'T CARE",
  "enabled": true,
  "action_ref": "wolfpack.action4",
  "formats": [
   "test alias list param str cast"
  ],
  "immutable_parameters": {
   "array_param": "one,two,three,four,give"
  }
 },
 {
  "name": "alias_with_undefined_jinja_in_ack_format",
  "pack": "aliases",
  "ref": "aliases.alias_with_undefined_jinja_in_ack_format",
  "description": "DON'T CARE",
  "enabled": true,
  "action_ref": "wolfpack.action1",
  "formats": [
   "run {{cmd}} on {{hosts}}"
  ]
 },
 {
  "name": "alias1",
  "pack": "aliases",
  "ref": "aliases.alias1",
  "description": "DON'T CARE",
  "enabled": true,
  "action_ref": "core.local",
  "formats": [
   "Lorem ipsum {{param1}} dolor sit {{param2}} amet.",
   "foo bar ponies"
  ]
 },
 {
  "name": "alias3",
  "pack": "generic",
  "ref": "generic.alias3",
  "description": "DON'T CARE",
  "enabled": true,
  "action_ref": "core.remote",
  "formats": [
   "format1",
   "format2"
  ]
 },
 {
  "name": "alias7",
  "pack": "generic",
  "ref": "generic.alias7",
  "description": "DON'T CARE",
  "enabled": true,
  "action_ref": "core.remote",
  "formats": [
   "format1",
   "format2"
  ]
 },
 {
  "name": "alias1",
  "pack": "dummy_pack_1",
  "ref": "dummy_pack_1.alias1",
  "description": "DON'T CARE",
  "enabled": true,
  "action_ref": "core.local",
  "formats": [
   "format1",
   "format2"
  ]
 },
 {
  "name": "alias2",
  "pack": "dummy_pack_1",
  "ref": "dummy_pack_1.alias2",
  "description": "DON'T CARE",
  "enabled": true,
  "action_ref": "core.local",
  "formats": [
   "format1",
   "format2"
  ]
 },
 {
  "name": "alias_ubuntu_harden",
  "pack": "dummy_pack_1",
  "ref": "dummy_pack_1.alias_ubuntu_harden",
  "description": "DON'T CARE",
  "enabled": true,
  "action_ref": "ubuntu.hardening",
  "formats": [
   "format1",
   "format2"
  ]
 },
 {
  "name": "alias1",
  "pack": "pack_name_not_the_same_as_dir_name",
  "ref": "pack_name_not_the_same_as_dir_name.alias1",
  "description": "DON'T CARE",
  "enabled": true,
  "action_ref": "wolfpack.action1",
  "formats": [
   "Lorem ipsum {{param1}} dolor sit {{param2}} amet."
  ]
 }
]"###;

fn matcher() -> Matcher {
    let aliases: Vec<Alias> = serde_json::from_str(ALIASES).expect("fixture aliases parse");
    Matcher::build(&aliases)
}

#[test]
fn every_real_format_compiles() {
    assert_eq!(matcher().failures(), &[]);
}

#[test]
fn lorem_ipsum_is_ambiguous_across_aliases() {
    // st2's unit test: alias1, alias2 and alias4 (and a copy of alias1 in another pack) match.
    match matcher().match_command("Lorem ipsum banana dolor sit pineapple amet.") {
        MatchOutcome::Ambiguous {
            multiple: false,
            candidates,
        } => {
            let refs: Vec<&str> = candidates.iter().map(|c| c.alias_ref.as_str()).collect();
            assert!(refs.contains(&"aliases.alias1"), "{refs:?}");
            assert!(refs.contains(&"aliases.alias2"), "{refs:?}");
            assert!(refs.contains(&"aliases.alias4"), "{refs:?}");
        }
        other => panic!("expected ambiguity, got {other:?}"),
    }
}

#[test]
fn identical_multi_formats_are_ambiguous_in_the_second_pass() {
    match matcher().match_command("JKROWLING-4 fixes JRRTOLKIEN-24 which fixes DRSEUSS-12") {
        MatchOutcome::Ambiguous {
            multiple: true,
            candidates,
        } => assert_eq!(candidates.len(), 2),
        other => panic!("expected multi ambiguity, got {other:?}"),
    }
}

#[test]
fn match_multiple_format_yields_one_param_set_per_hit() {
    let out = matcher().match_command(
        "JKROWLING-4 is a duplicate of JRRTOLKIEN-24 which is a duplicate of DRSEUSS-12",
    );
    let MatchOutcome::Matched(m) = out else {
        panic!("expected a match, got {out:?}");
    };
    assert_eq!(m.alias_ref, "aliases.alias_match_multiple");
    assert_eq!(m.display.as_deref(), Some("duplicate of <issue_key>"));
    let MatchParams::Multiple(list) = m.params else {
        panic!("expected a list");
    };
    let keys: Vec<_> = list
        .iter()
        .map(|p| p["issue_key"].clone().unwrap_or_default())
        .collect();
    assert_eq!(keys, ["JRRTOLKIEN-24", "DRSEUSS-12"]);
}

#[test]
fn pack_install_matches_its_representation() {
    let out = matcher().match_command("pack install st2 timeout=30");
    let MatchOutcome::Matched(m) = out else {
        panic!("expected a match, got {out:?}");
    };
    assert_eq!(m.alias_name, "pack_install");
    assert_eq!(m.representation, "pack install {{ packs }}");
    let MatchParams::Single(p) = m.params else {
        panic!("expected single params");
    };
    assert_eq!(p["packs"].as_deref(), Some("st2"));
    assert_eq!(p["timeout"].as_deref(), Some("30"));
}

#[test]
fn shared_run_format_is_ambiguous_between_two_aliases() {
    // remote_shell_cmd and alias_with_undefined_jinja_in_ack_format share the format.
    assert!(matches!(
        matcher().match_command("run date on localhost"),
        MatchOutcome::Ambiguous {
            multiple: false,
            ..
        }
    ));
}

#[test]
fn unknown_command_suggests_help_strings() {
    let matcher = matcher();
    assert!(matches!(
        matcher.match_command("pack instal st2"),
        MatchOutcome::NoMatch
    ));
    let closest = matcher.closest("pack instal st2");
    assert!(
        closest.iter().any(|d| d.starts_with("pack install")),
        "{closest:?}"
    );
    assert!(closest.len() <= 3);
}

/// Commands that reach the fixture's aliases in different ways (unique, ambiguous, multi, none).
const COMMANDS: &[&str] = &[
    "run date on localhost",
    "pack install st2 timeout=30",
    "pack get st2",
    "pack search git",
    "greet hello",
    "Lorem ipsum banana dolor sit pineapple amet.",
    "JKROWLING-4 fixes JRRTOLKIEN-24 which fixes DRSEUSS-12",
    "JKROWLING-4 is a duplicate of JRRTOLKIEN-24",
    "pack instal st2",
    "",
];

fn outcomes(m: &Matcher) -> Vec<MatchOutcome> {
    COMMANDS.iter().map(|c| m.match_command(c)).collect()
}

#[test]
fn reload_with_unchanged_aliases_reuses_everything() {
    let aliases: Vec<Alias> = serde_json::from_str(ALIASES).expect("fixture aliases parse");
    let first = Matcher::build(&aliases);
    let reloaded = first.rebuild(&aliases);
    assert_eq!(outcomes(&reloaded), outcomes(&first));
    assert_eq!(reloaded.format_count(), first.format_count());
    // Every distinct format string came from the first matcher.
    let distinct: std::collections::HashSet<&str> = aliases
        .iter()
        .filter(|a| a.enabled)
        .flat_map(|a| a.formats.iter().flat_map(|f| f.patterns()))
        .map(|p| p.representation)
        .collect();
    assert_eq!(reloaded.reused_count(), distinct.len());
}

#[test]
fn reload_handles_changed_removed_added_and_disabled_aliases() {
    let aliases: Vec<Alias> = serde_json::from_str(ALIASES).expect("fixture aliases parse");
    let first = Matcher::build(&aliases);

    let mut edited = aliases.clone();
    // Changed: greet takes a different format.
    let greet = edited
        .iter_mut()
        .find(|a| a.name == "greet")
        .expect("greet alias");
    greet.formats = vec![FormatSpec::Plain("greet {{greeting}} loudly".into())];
    // Removed: pack_search.
    edited.retain(|a| a.name != "pack_search");
    // Disabled: pack_get.
    if let Some(a) = edited.iter_mut().find(|a| a.name == "pack_get") {
        a.enabled = false;
    }
    // Added: a new alias, one of whose formats is broken.
    edited.insert(
        2,
        serde_json::from_value(serde_json::json!({
            "name": "wave", "pack": "hello_st2",
            "formats": ["wave at {{who}}", "wave {{my-param}}"],
        }))
        .expect("valid alias"),
    );

    let reloaded = first.rebuild(&edited);
    let fresh = Matcher::build(&edited);
    assert_eq!(outcomes(&reloaded), outcomes(&fresh));
    assert_eq!(reloaded.failures(), fresh.failures());
    assert_eq!(reloaded.format_count(), fresh.format_count());
    assert!(matches!(
        reloaded.match_command("greet hello loudly"),
        MatchOutcome::Matched(_)
    ));
    assert!(matches!(
        reloaded.match_command("pack search git"),
        MatchOutcome::NoMatch
    ));
    let MatchOutcome::Matched(m) = reloaded.match_command("wave at everyone") else {
        panic!("the added alias should match");
    };
    assert_eq!(m.alias_ref, "hello_st2.wave");
    assert_eq!(reloaded.failures().len(), 1);

    // And back again: the reloaded matcher is itself a valid base for the next reload.
    let back = reloaded.rebuild(&aliases);
    assert_eq!(outcomes(&back), outcomes(&first));
    assert_eq!(back.failures(), first.failures());
}
